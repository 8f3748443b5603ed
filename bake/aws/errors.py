"""Cloud trouble as the toolkit's own errors: missing or expired credentials, an endpoint that does
not answer, a denied action, throttling that outlasted botocore's retries. Each becomes one line
that says what is wrong and what would help, never an "internal error"."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)

from bake.errors import BakeError, InputError

CREDENTIALS_HINT = (
    "set AWS_PROFILE (or [aws] profile), environment variables, SSO, or an instance role; "
    "`bake doctor` checks them"
)
EXPIRED = {"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"}
UNRECOGNISED = {"UnrecognizedClientException", "InvalidClientTokenId", "AuthFailure"}
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden"}
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "RequestThrottled",
}


def error_code(exc: ClientError) -> str:
    """The AWS error code of a refused call (`ParameterNotFound`, `AccessDenied`, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


class CloudError(BakeError):
    """The cloud refused or could not be reached; what was done before is in history."""


class CloudCredentialsError(InputError):
    """No usable credentials: nothing could be asked of the cloud."""


def cloud_error(exc: BaseException) -> BakeError | None:
    """The toolkit's error for a boto3/botocore exception; None for anything else."""
    if isinstance(exc, ClientError):
        return _client_error(exc)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return CloudCredentialsError(f"no usable AWS credentials: {exc}", hint=CREDENTIALS_HINT)
    if isinstance(
        exc,
        CredentialRetrievalError
        | TokenRetrievalError
        | SSOTokenLoadError
        | UnauthorizedSSOTokenError,
    ):
        return CloudCredentialsError(
            f"AWS credentials could not be refreshed: {exc}",
            hint="log in again (aws sso login) or renew the role session",
        )
    if isinstance(exc, NoRegionError):
        return InputError(f"no AWS region: {exc}", hint="set [aws] region in bake.toml")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        return CloudError(
            f"cannot reach AWS: {exc}",
            hint="check the network route to AWS, a proxy, or [aws] endpoint_url",
        )
    if isinstance(exc, BotoCoreError):
        return CloudError(f"AWS call failed: {exc}")
    return None


def _client_error(exc: ClientError) -> BakeError:
    code = error_code(exc) or "Unknown"
    message = exc.response.get("Error", {}).get("Message", "") or str(exc)
    operation = exc.operation_name
    attempts = int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)) + 1
    if code in EXPIRED:
        return CloudCredentialsError(
            f"the AWS credentials have expired ({code} calling {operation})",
            hint="renew them: a profile or role that refreshes, or a new session",
        )
    if code in UNRECOGNISED:
        return CloudCredentialsError(
            f"AWS does not recognise these credentials ({code} calling {operation}): {message}",
            hint=CREDENTIALS_HINT,
        )
    if code in DENIED:
        return CloudError(
            f"AWS denied {operation} ({code}): {message}",
            hint="`bake iam-policy` prints the permissions the pipeline needs for this config",
        )
    if code in THROTTLED:
        return CloudError(
            f"AWS throttled {operation} ({code}) and still did after {attempts} attempts",
            hint="run again later, or lower the parallelism of what calls this account",
        )
    tried = f" after {attempts} attempts" if attempts > 1 else ""
    return CloudError(f"AWS refused {operation} ({code}){tried}: {message}")
