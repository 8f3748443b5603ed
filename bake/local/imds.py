"""The local target's instance metadata service: IMDSv2 for one connection, on stdin and stdout.

QEMU's user networking runs `python -m bake.local.imds DOCUMENT` for each TCP connection a guest
opens to 169.254.169.254:80 (`guestfwd=...-cmd:`), so this is not a server: it answers the HTTP
requests of one connection from the machine's instance document, then exits. It starts once per
connection, so it imports a few standard modules and nothing else.

libslirp makes the connection the process's stdin, stdout *and* stderr: a diagnostic written
to stderr would reach the guest, so `_complain` stays silent when stderr is that socket.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import stat
import sys
import time
from dataclasses import asdict, dataclass, replace

# typing is left out at run time (it costs milliseconds on every connection); mypy reads
# this block as true whatever the value.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any, BinaryIO

TOKEN_PATH = "/latest/api/token"
TOKEN_HEADER = "x-aws-ec2-metadata-token"
TTL_HEADER = "x-aws-ec2-metadata-token-ttl-seconds"
TTL_NAME = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"  # as EC2 spells it in answers
MAX_TTL = 21600  # six hours, EC2's limit
DEFAULT_ACCOUNT = "123456789012"  # moto's account
DEFAULT_MAC = "52:54:00:12:34:56"  # the MAC QEMU gives a machine's first network card
MAX_LINE = 8192
MAX_HEADERS = 100
MAX_BODY = 65536
# Characters QEMU's option parser (commas) or libslirp's argv splitting (blanks, quotes,
# backslashes) would take apart inside a guestfwd command.
UNSAFE_IN_COMMAND = ",'\"\\"

REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    505: "HTTP Version Not Supported",
}
TOKEN_CHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE = re.compile(rf"({TOKEN_CHARS}) (\S+) HTTP/(\d)\.(\d)")
HEADER_LINE = re.compile(rf"({TOKEN_CHARS}):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")


@dataclass(frozen=True)
class InstanceDocument:
    """What the metadata service of one machine knows about its instance."""

    instance_id: str
    ami_id: str
    instance_type: str
    region: str
    availability_zone: str
    local_ipv4: str
    hostname: str
    launched: str  # ISO time, the identity document's pendingTime
    user_data: bytes | None = None
    http_tokens: str = "optional"  # MetadataOptions.HttpTokens; EC2's API defaults to optional
    http_endpoint: str = "enabled"
    account_id: str = DEFAULT_ACCOUNT
    mac: str = DEFAULT_MAC
    # The role of the instance's profile ("" without one): its credentials are served, as EC2
    # serves a profile's (the local cloud takes any).
    iam_role: str = ""
    secret: str = ""  # signs the tokens; write_document makes one when empty

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name != "user_data" and not isinstance(value, str):
                raise ValueError(f"{name} must be a string, not {value!r}")
        if self.user_data is not None and not isinstance(self.user_data, bytes):
            raise ValueError("user_data must be bytes or None")
        if self.http_tokens not in ("required", "optional"):
            raise ValueError(f"http_tokens must be required or optional, not {self.http_tokens!r}")
        if self.http_endpoint not in ("enabled", "disabled"):
            raise ValueError(
                f"http_endpoint must be enabled or disabled, not {self.http_endpoint!r}"
            )


def _ec2_hostname(local_ipv4: str, region: str) -> str:
    """The private DNS name EC2 gives an address: ip-10-0-0-5.ec2.internal in us-east-1."""
    domain = "ec2.internal" if region == "us-east-1" else f"{region}.compute.internal"
    return f"ip-{local_ipv4.replace('.', '-')}.{domain}"


def new_document(**fields: Any) -> InstanceDocument:
    """A document with a fresh secret and, unless given, the hostname EC2 derives from the IP."""
    fields.setdefault("secret", os.urandom(32).hex())
    if "hostname" not in fields and "local_ipv4" in fields:
        fields["hostname"] = _ec2_hostname(fields["local_ipv4"], fields.get("region", ""))
    return InstanceDocument(**fields)


def write_document(path: Path | str, document: InstanceDocument) -> None:
    """Write `document` as JSON readable by its owner only, replacing any old one at once."""
    if not document.secret:
        document = replace(document, secret=os.urandom(32).hex())
    data = asdict(document)
    if document.user_data is not None:
        data["user_data"] = base64.b64encode(document.user_data).decode("ascii")
    temporary = f"{os.fspath(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(descriptor, "w", encoding="utf-8") as file:
            json.dump(data, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def read_document(path: Path | str) -> InstanceDocument:
    """The document at `path`; OSError when it cannot be read, ValueError when it is not one."""
    with open(path, encoding="utf-8") as file:
        data = json.load(file)
    if not isinstance(data, dict):
        raise ValueError(f"{os.fspath(path)} holds no JSON object")
    if isinstance(data.get("user_data"), str):
        data["user_data"] = base64.b64decode(data["user_data"], validate=True)
    try:
        document = InstanceDocument(**data)
    except TypeError as exc:  # a missing or unknown field
        raise ValueError(f"{os.fspath(path)} is not an instance document: {exc}") from None
    if not document.secret:
        raise ValueError(f"{os.fspath(path)} has no secret to sign tokens with")
    return document


def command(document_path: Path | str, python: str = sys.executable) -> str:
    """The guestfwd command that answers a connection from the document at `document_path`."""
    path = os.path.abspath(document_path)
    for part in (python, path):
        if not part or any(char in UNSAFE_IN_COMMAND or char.isspace() for char in part):
            raise ValueError(
                f"cannot use {part!r} in QEMU's guestfwd command: QEMU splits its options at "
                "commas and libslirp splits the command at whitespace and quotes, so the path "
                "must have no comma, whitespace, quote or backslash"
            )
    return f"{python} -m bake.local.imds {path}"


# tokens: stateless, since every connection is a new process


def _sign(secret: str, message: str) -> str:
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def _issue_token(secret: str, ttl: int, now: float) -> str:
    """A token that is valid for `ttl` seconds from `now`: its expiry and the expiry's HMAC."""
    expiry = str(math.floor((now + ttl) * 1000))  # milliseconds since the epoch
    return base64.urlsafe_b64encode(f"{expiry}.{_sign(secret, expiry)}".encode()).decode()


def _seconds_left(secret: str, token: str, now: float) -> float | None:
    """How long `token` stays valid after `now`; None when it is forged, garbled or expired."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except ValueError:  # binascii.Error and UnicodeError are ValueErrors
        return None
    expiry, _, signature = decoded.partition(".")
    if not (expiry.isdigit() and hmac.compare_digest(signature, _sign(secret, expiry))):
        return None
    left = int(expiry) / 1000 - now
    return left if left > 0 else None


# HTTP


class _BadRequest(Exception):
    """A request that cannot be read; it is answered with `status` and the connection closes."""

    def __init__(self, status: int = 400) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class _Request:
    method: str
    path: str  # without query or fragment
    headers: dict[str, str]  # names in lower case
    keep_alive: bool


@dataclass(frozen=True)
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False


def _line(reader: BinaryIO) -> bytes | None:
    """One line without its line ending; None at the end of the input."""
    raw = reader.readline(MAX_LINE + 1)
    if not raw:
        return None
    if not raw.endswith(b"\n"):
        raise _BadRequest()  # too long, or cut off by the end of the input
    return raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]


def _path(target: str) -> str:
    if target.startswith("http://"):  # the absolute form, which HTTP/1.1 servers must accept
        slash = target.find("/", len("http://"))
        target = target[slash:] if slash >= 0 else "/"
    if not target.startswith("/"):
        raise _BadRequest()
    return target.partition("?")[0].partition("#")[0]


def _headers(reader: BinaryIO) -> dict[str, str] | None:
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(reader)
        if line is None:
            return None
        if not line:
            return headers
        match = HEADER_LINE.fullmatch(line.decode("latin-1"))
        if not match:
            raise _BadRequest()
        name, value = match.group(1).lower(), match.group(2)
        if name == "content-length" and name in headers:
            raise _BadRequest()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raise _BadRequest()


def _read_request(reader: BinaryIO) -> _Request | None:
    """The next request on the connection, its body read and dropped; None when it has ended."""
    line = _line(reader)
    while line == b"":  # empty lines before a request are ignored (RFC 9112, 2.2)
        line = _line(reader)
    if line is None:
        return None
    match = REQUEST_LINE.fullmatch(line.decode("latin-1"))
    if not match:
        raise _BadRequest()
    method, target, major, minor = match.groups()
    if major != "1":
        raise _BadRequest(505)
    path = _path(target)
    headers = _headers(reader)
    if headers is None:
        return None
    if "transfer-encoding" in headers:
        raise _BadRequest(501)
    length = headers.get("content-length", "0")
    if not (length.isascii() and length.isdigit()):
        raise _BadRequest()
    if int(length) > MAX_BODY:
        raise _BadRequest(413)
    if len(reader.read(int(length))) < int(length):
        return None
    options = {option.strip().lower() for option in headers.get("connection", "").split(",")}
    keep_alive = "keep-alive" in options if minor == "0" else "close" not in options
    return _Request(method, path, headers, keep_alive)


def _error(status: int, *, allow: str | None = None, close: bool = False) -> _Response:
    """An error in EC2's manner: a small HTML page titled with the status."""
    title = f"{status} - {REASONS[status]}"
    body = (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n<html><head><title>'
        f"{title}</title></head><body><h1>{title}</h1></body></html>\n"
    )
    headers = (("Allow", allow),) if allow else ()
    return _Response(status, body.encode(), "text/html", headers, close)


def _render(response: _Response, now: float, close: bool) -> bytes:
    head = [
        f"HTTP/1.1 {response.status} {REASONS[response.status]}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Date: " + time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
        "Server: EC2ws",
        *(f"{name}: {value}" for name, value in response.headers),
        "Connection: close" if close else "Connection: keep-alive",
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + response.body


def _exchange(
    reader: BinaryIO,
    writer: BinaryIO,
    respond: Callable[[_Request], _Response],
    clock: Callable[[], float],
) -> None:
    """Read requests and write `respond`'s answers until the connection ends or asks to close."""
    while True:
        try:
            request = _read_request(reader)
        except _BadRequest as bad:
            writer.write(_render(_error(bad.status), clock(), close=True))
            writer.flush()
            return
        if request is None:
            return
        try:
            response = respond(request)
        except Exception as exc:  # a bug: the guest gets a 500, never a traceback
            _complain(f"cannot answer {request.method} {request.path}: {exc!r}")
            response = _error(500, close=True)
        close = response.close or not request.keep_alive
        writer.write(_render(response, clock(), close))
        writer.flush()
        if close:
            return


# the metadata


def _identity(document: InstanceDocument) -> str:
    """The instance identity document, laid out as EC2 lays it out."""
    identity = {
        "accountId": document.account_id,
        "architecture": "x86_64",
        "availabilityZone": document.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": document.ami_id,
        "instanceId": document.instance_id,
        "instanceType": document.instance_type,
        "kernelId": None,
        "pendingTime": document.launched,
        "privateIp": document.local_ipv4,
        "ramdiskId": None,
        "region": document.region,
        "version": "2017-09-30",
    }
    return json.dumps(identity, indent=2, separators=(",", " : "))


def _credentials(document: InstanceDocument) -> dict[str, str]:
    """The role's credentials as EC2 answers them (`iam/security-credentials/ROLE`): for the local
    cloud, which checks no signature, keys named after the instance, valid for six hours."""
    issued = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued))
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued + MAX_TTL))
    suffix = document.instance_id.removeprefix("i-").upper()
    return {
        "Code": "Success",
        "LastUpdated": stamp,
        "Type": "AWS-HMAC",
        "AccessKeyId": f"ASIA{suffix}"[:20],
        "SecretAccessKey": f"local-{document.instance_id}",
        "Token": f"local-token-{document.instance_id}",
        "Expiration": expires,
    }


def _tree(document: InstanceDocument) -> dict[str, Any]:
    """What the service answers with: a dict is a listing, a str text, bytes user data."""
    meta_data: dict[str, Any] = {
        "ami-id": document.ami_id,
        "hostname": document.hostname,
        "instance-id": document.instance_id,
        "instance-type": document.instance_type,
        "local-hostname": document.hostname,
        "local-ipv4": document.local_ipv4,
        "mac": document.mac,
        "placement": {
            "availability-zone": document.availability_zone,
            "region": document.region,
        },
    }
    if document.iam_role:
        profile = f"arn:aws:iam::{document.account_id}:instance-profile/{document.iam_role}"
        info = {"Code": "Success", "InstanceProfileArn": profile, "InstanceProfileId": "AIPA"}
        meta_data["iam"] = {
            "info": json.dumps(info, indent=2),
            "security-credentials": {
                document.iam_role: json.dumps(_credentials(document), indent=2)
            },
        }
    latest: dict[str, Any] = {
        "dynamic": {"instance-identity": {"document": _identity(document)}},
        "meta-data": meta_data,
    }
    if document.user_data is not None:
        latest["user-data"] = document.user_data
    return {"latest": latest}


def _lookup(root: dict[str, Any], path: str) -> _Response:
    """The answer for a GET of `path`: a listing for a directory (with or without its trailing
    slash), the value of a leaf (never with one), else 404."""
    names = path[1:].split("/")
    if path.endswith("/"):
        names.pop()
    node: Any = root
    for name in names:
        if not isinstance(node, dict) or name not in node:
            return _error(404)
        node = node[name]
    if isinstance(node, dict):
        # EC2 marks directories with a slash below a version (meta-data/, placement/), but
        # not in the listings of / and /latest/ themselves.
        slashed = len(names) >= 2
        listing = (
            name + "/" if slashed and isinstance(value, dict) else name
            for name, value in node.items()
        )
        return _Response(200, "\n".join(listing).encode())
    if path.endswith("/"):
        return _error(404)
    if isinstance(node, bytes):
        return _Response(200, node, "application/octet-stream")
    return _Response(200, node.encode())


def _token(request: _Request, document: InstanceDocument, now: float) -> _Response:
    if "x-forwarded-for" in request.headers:  # EC2 refuses tokens to requests through proxies
        return _error(403)
    ttl = request.headers.get(TTL_HEADER, "")
    if not (ttl.isascii() and ttl.isdigit() and 1 <= int(ttl) <= MAX_TTL):
        return _error(400)
    token = _issue_token(document.secret, int(ttl), now)
    return _Response(200, token.encode(), headers=((TTL_NAME, str(int(ttl))),))


def _answer(
    request: _Request, document: InstanceDocument, root: dict[str, Any], now: float
) -> _Response:
    """The service's answer to one request."""
    if document.http_endpoint == "disabled":  # EC2 answers 403 when the endpoint is turned off
        return _error(403)
    if request.path == TOKEN_PATH:
        if request.method != "PUT":
            return _error(405, allow="PUT")
        return _token(request, document, now)
    if request.method != "GET":
        return _error(405, allow="GET")
    token = request.headers.get(TOKEN_HEADER)
    if token is None:
        return _error(401) if document.http_tokens == "required" else _lookup(root, request.path)
    left = _seconds_left(document.secret, token, now)
    if left is None:
        return _error(401)
    response = _lookup(root, request.path)
    ttl = (TTL_NAME, str(math.ceil(left)))  # what is left of the token's life
    return replace(response, headers=(*response.headers, ttl))


def serve(
    reader: BinaryIO,
    writer: BinaryIO,
    document: InstanceDocument,
    *,
    clock: Callable[[], float] = time.time,
) -> None:
    """Answer the requests of one connection from `document` until it ends or asks to close."""
    root = _tree(document)
    _exchange(reader, writer, lambda request: _answer(request, document, root, clock()), clock)


def _complain(message: str) -> None:
    """A line on stderr, unless stderr is the guest's connection, as libslirp makes it."""
    try:
        if stat.S_ISSOCK(os.fstat(2).st_mode) and os.path.sameopenfile(1, 2):
            return
        print(f"bake.local.imds: {message}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Serve the connection on stdin and stdout from the document named on the command line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        _complain("usage: python -m bake.local.imds DOCUMENT")
        return 2
    reader, writer = sys.stdin.buffer, sys.stdout.buffer
    try:
        document: InstanceDocument | None = read_document(args[0])
    except (OSError, ValueError) as exc:
        _complain(f"cannot read the instance document: {exc}")
        document = None
    try:
        if document is None:
            _exchange(reader, writer, lambda _request: _error(500, close=True), time.time)
        else:
            serve(reader, writer, document)
    except OSError:  # the guest went away mid-answer: nothing is left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # so the final flush cannot fail loudly
        return 1
    return 0 if document else 1


if __name__ == "__main__":
    sys.exit(main())
