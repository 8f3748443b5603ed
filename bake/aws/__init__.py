"""boto3 code, split by resource.

The same calls serve real AWS and the local target's moto server.
"""
