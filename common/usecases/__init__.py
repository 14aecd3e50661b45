"""The use cases, one module each, each given exactly the collaborators (ports) it uses:

- create_job:     validate a request, record the job, list the images and publish one message per image
- classify_image: classify one image, copy it into each matching class, record the result once
- job_status:     read a job's counters (a query: it writes nothing)

common/bootstrap.py wires them to adapters; the HTTP layer and the Pub/Sub entry point call them.
"""
