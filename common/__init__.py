"""Shared code for the image classification service: domain logic, ports, adapters and the function bodies."""
