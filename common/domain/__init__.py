"""The domain: what a job is, what a result is, what a class means. Plain typed Python: no I/O, no HTTP, no
cloud SDK. NumPy appears only in matching.py (probabilities are arrays); nothing here touches a disk or network
except reading the data files shipped in common/data."""
