"""The use cases, one module each, each given exactly the collaborators (ports) it uses:

- create_job:          validate a request, record the job, list and publish one message per image (and resume)
- classify_image:      classify one image (or answer from stored predictions), copy it, record the result once
- job_status:          read a job's counters (a query: it writes nothing)
- report_job:          the results page, CSV and JSON Lines, previews (a query)
- undo_job:            remove exactly the copies a job wrote
- watch:               objects arriving for watch jobs, and closing them
- announce_completion: the job-events message and the callback, once per job

common/bootstrap/ wires them to adapters; the HTTP layer and the Pub/Sub entry points call them.
"""
