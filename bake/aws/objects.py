"""S3 objects the toolkit keeps: a release in a service's release store."""

from __future__ import annotations

from botocore.exceptions import ClientError

from bake.aws.session import Cloud

SHA256_KEY = "sha256"  # the object's metadata: what its content hashes to


def stored_sha256(cloud: Cloud, bucket: str, key: str) -> str | None:
    """The sha256 an object was stored with; None when there is no such object."""
    try:
        head = cloud.client("s3").head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return str(head.get("Metadata", {}).get(SHA256_KEY, ""))


def put(cloud: Cloud, bucket: str, key: str, data: bytes, sha256: str) -> None:
    """Store `data`, with its sha256 in the object's metadata and checked by S3 on arrival."""
    import base64
    import hashlib

    cloud.client("s3").put_object(
        Bucket=bucket,
        Key=key,
        Body=data,
        ContentType="application/gzip",
        ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
        Metadata={SHA256_KEY: sha256},
    )


def ensure_bucket(cloud: Cloud, bucket: str) -> None:
    """The bucket, made when it does not exist (the local target's own release store)."""
    s3 = cloud.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        where = {"LocationConstraint": cloud.region}
        if cloud.region == "us-east-1":  # S3 refuses us-east-1 as a location constraint
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration=where)
