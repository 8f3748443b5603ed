"""The local metadata service: IMDSv2 tokens, the paths EC2 serves, HTTP on one connection, and the
process QEMU starts for each connection."""

from __future__ import annotations

import base64
import io
import json
import socket
import stat
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bake.local import imds

NOW = 1_700_000_000.0
USER_DATA = b"#!/bin/sh\necho hello\n\xff\x00"  # not text: user data is bytes


def document(**changes: object) -> imds.InstanceDocument:
    fields: dict[str, object] = {
        "instance_id": "i-0123456789abcdef0",
        "ami_id": "ami-0abcdef1234567890",
        "instance_type": "t3.micro",
        "region": "us-east-1",
        "availability_zone": "us-east-1a",
        "local_ipv4": "169.254.0.15",
        "launched": "2024-05-01T12:00:00Z",
        "user_data": USER_DATA,
        "http_tokens": "required",
    }
    return imds.new_document(**{**fields, **changes})


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


def parse(raw: bytes) -> list[Reply]:
    """The answers in `raw`, each framed by its Content-Length."""
    replies = []
    while raw:
        head, end, raw = raw.partition(b"\r\n\r\n")
        assert end, f"an answer without the end of its head: {head!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        version, status, _reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1"
        headers = {}
        for line in lines:
            name, _, value = line.partition(": ")
            headers[name.lower()] = value
        length = int(headers["content-length"])
        replies.append(Reply(int(status), headers, raw[:length]))
        raw = raw[length:]
    return replies


def talk(*requests: str | bytes, doc: imds.InstanceDocument | None = None, now: float = NOW):
    """Serve one connection that sends `requests`, and the answers it gets."""
    raw = b"".join(r.encode("latin-1") if isinstance(r, str) else r for r in requests)
    answers = io.BytesIO()
    imds.serve(io.BytesIO(raw), answers, doc or document(), clock=lambda: now)
    return parse(answers.getvalue())


def get(path: str, token: str | None = None, headers: str = "") -> str:
    token_header = f"X-aws-ec2-metadata-token: {token}\r\n" if token is not None else ""
    return f"GET {path} HTTP/1.1\r\nHost: 169.254.169.254\r\n{token_header}{headers}\r\n"


def put_token(ttl: str | None = "21600", headers: str = "") -> str:
    ttl_header = f"X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n" if ttl is not None else ""
    return f"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n{ttl_header}{headers}\r\n"


def token_for(doc: imds.InstanceDocument, now: float = NOW, ttl: int = 21600) -> str:
    (reply,) = talk(put_token(str(ttl)), doc=doc, now=now)
    assert reply.status == 200, reply
    return reply.body.decode("ascii")


# tokens


def test_a_token_put_answers_the_token_with_its_ttl() -> None:
    (reply,) = talk(put_token("300"))
    assert reply.status == 200
    assert reply.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "300"
    assert reply.headers["server"] == "EC2ws"
    assert reply.headers["content-type"] == "text/plain"
    assert reply.body and reply.body.isascii() and b"\n" not in reply.body


@pytest.mark.parametrize("ttl", ["1", "21600"])
def test_the_ttl_bounds_are_accepted(ttl: str) -> None:
    (reply,) = talk(put_token(ttl))
    assert (reply.status, reply.headers["x-aws-ec2-metadata-token-ttl-seconds"]) == (200, ttl)


@pytest.mark.parametrize(
    "ttl", ["0", "21601", "-1", "+5", "1.5", "abc", "", "²"]
)  # ² passes str.isdigit
def test_a_ttl_out_of_range_or_not_a_number_is_a_bad_request(ttl: str) -> None:
    (reply,) = talk(put_token(ttl))
    assert reply.status == 400


def test_a_token_put_without_a_ttl_is_a_bad_request() -> None:
    (reply,) = talk(put_token(None))
    assert reply.status == 400


def test_a_token_put_through_a_proxy_is_forbidden() -> None:
    (reply,) = talk(put_token("60", headers="X-Forwarded-For: 10.0.0.1\r\n"))
    assert reply.status == 403


def test_required_tokens_refuse_a_get_without_one_and_accept_a_get_with_one() -> None:
    doc = document(http_tokens="required")
    (refused,) = talk(get("/latest/meta-data/instance-id"), doc=doc)
    assert refused.status == 401
    (answered,) = talk(get("/latest/meta-data/instance-id", token_for(doc, ttl=600)), doc=doc)
    assert (answered.status, answered.body) == (200, b"i-0123456789abcdef0")
    assert answered.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "600"


def test_optional_tokens_answer_imdsv1_but_refuse_a_bad_token() -> None:
    doc = document(http_tokens="optional")
    (v1,) = talk(get("/latest/meta-data/instance-id"), doc=doc)
    assert (v1.status, v1.body) == (200, b"i-0123456789abcdef0")
    assert "x-aws-ec2-metadata-token-ttl-seconds" not in v1.headers
    (bad,) = talk(get("/latest/meta-data/instance-id", "not-a-token"), doc=doc)
    assert bad.status == 401
    (v2,) = talk(get("/latest/meta-data/instance-id", token_for(doc)), doc=doc)
    assert v2.status == 200


def test_a_token_is_valid_until_its_ttl_has_passed() -> None:
    doc = document()
    token = token_for(doc, now=NOW, ttl=60)
    (early,) = talk(get("/latest/meta-data/ami-id", token), doc=doc, now=NOW + 59.5)
    assert early.status == 200
    assert early.headers["x-aws-ec2-metadata-token-ttl-seconds"] == "1"
    (late,) = talk(get("/latest/meta-data/ami-id", token), doc=doc, now=NOW + 60)
    assert late.status == 401


def test_a_token_of_another_instance_or_a_forged_one_is_refused() -> None:
    doc = document()
    other = token_for(document())  # new_document gives each document its own secret
    assert talk(get("/latest/meta-data/ami-id", other), doc=doc)[0].status == 401
    expiry, _, signature = base64.urlsafe_b64decode(token_for(doc)).decode().partition(".")
    later = str(int(expiry) + 1000)
    forged = base64.urlsafe_b64encode(f"{later}.{signature}".encode()).decode()
    assert talk(get("/latest/meta-data/ami-id", forged), doc=doc)[0].status == 401
    assert talk(get("/latest/meta-data/ami-id", ""), doc=doc)[0].status == 401
    assert talk(get("/latest/meta-data/ami-id", "é"), doc=doc)[0].status == 401


def test_a_disabled_endpoint_forbids_everything() -> None:
    doc = document(http_endpoint="disabled", http_tokens="optional")
    replies = talk(put_token("60"), get("/latest/meta-data/instance-id"), doc=doc)
    assert [reply.status for reply in replies] == [403, 403]
    assert b"i-0123456789abcdef0" not in b"".join(reply.body for reply in replies)


# paths

META_DATA = (
    b"ami-id\nhostname\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nplacement/"
)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/", b"latest"),
        ("/latest/", b"dynamic\nmeta-data\nuser-data"),
        ("/latest", b"dynamic\nmeta-data\nuser-data"),
        ("/latest/meta-data/", META_DATA),
        ("/latest/meta-data", META_DATA),
        ("/latest/meta-data/instance-id", b"i-0123456789abcdef0"),
        ("/latest/meta-data/ami-id", b"ami-0abcdef1234567890"),
        ("/latest/meta-data/instance-type", b"t3.micro"),
        ("/latest/meta-data/local-ipv4", b"169.254.0.15"),
        ("/latest/meta-data/hostname", b"ip-169-254-0-15.ec2.internal"),
        ("/latest/meta-data/local-hostname", b"ip-169-254-0-15.ec2.internal"),
        ("/latest/meta-data/mac", b"52:54:00:12:34:56"),
        ("/latest/meta-data/placement/", b"availability-zone\nregion"),
        ("/latest/meta-data/placement/availability-zone", b"us-east-1a"),
        ("/latest/meta-data/placement/region", b"us-east-1"),
        ("/latest/meta-data/instance-id?x=1", b"i-0123456789abcdef0"),
        ("/latest/dynamic/", b"instance-identity/"),
        ("/latest/dynamic/instance-identity/", b"document"),
    ],
)
def test_each_path_answers_its_text(path: str, body: bytes) -> None:
    doc = document()
    (reply,) = talk(get(path, token_for(doc)), doc=doc)
    assert (reply.status, reply.body) == (200, body)
    assert reply.headers["content-type"] == "text/plain"


def test_user_data_is_the_raw_bytes() -> None:
    doc = document()
    (reply,) = talk(get("/latest/user-data", token_for(doc)), doc=doc)
    assert (reply.status, reply.body) == (200, USER_DATA)
    assert reply.headers["content-type"] == "application/octet-stream"


def test_an_instance_without_user_data_lists_none_and_answers_404() -> None:
    doc = document(user_data=None)
    token = token_for(doc)
    listing, user_data = talk(get("/latest/", token), get("/latest/user-data", token), doc=doc)
    assert listing.body == b"dynamic\nmeta-data"
    assert user_data.status == 404


def test_the_identity_document_is_ec2s() -> None:
    doc = document(region="eu-west-1", availability_zone="eu-west-1b", account_id="111122223333")
    path = "/latest/dynamic/instance-identity/document"
    (reply,) = talk(get(path, token_for(doc)), doc=doc)
    assert reply.status == 200
    assert b'"instanceId" : "i-0123456789abcdef0"' in reply.body  # EC2's own layout
    identity = json.loads(reply.body)
    assert identity == {
        "accountId": "111122223333",
        "architecture": "x86_64",
        "availabilityZone": "eu-west-1b",
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": "ami-0abcdef1234567890",
        "instanceId": "i-0123456789abcdef0",
        "instanceType": "t3.micro",
        "kernelId": None,
        "pendingTime": "2024-05-01T12:00:00Z",
        "privateIp": "169.254.0.15",
        "ramdiskId": None,
        "region": "eu-west-1",
        "version": "2017-09-30",
    }


@pytest.mark.parametrize(
    "path",
    [
        "/latest/meta-data/instance-id/",
        "/latest/user-data/",
        "/latest/meta-data/placement/region/",
        "/latest/meta-data/nothing",
        "/latest/meta-data/instance-id/more",
        "/latest/meta-data//",
        "/latest//meta-data/",
        "/2021-07-15/meta-data/instance-id",
        "/latest/dynamic/instance-identity/pkcs7",
    ],
)
def test_trailing_slashes_on_values_and_unknown_paths_are_not_found(path: str) -> None:
    doc = document()
    (reply,) = talk(get(path, token_for(doc)), doc=doc)
    assert reply.status == 404
    assert reply.headers["content-type"] == "text/html"
    assert b"404 - Not Found" in reply.body


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/latest/meta-data/", "GET"),
        ("DELETE", "/latest/meta-data/instance-id", "GET"),
        ("HEAD", "/latest/meta-data/instance-id", "GET"),
        ("PUT", "/latest/meta-data/instance-id", "GET"),
        ("GET", "/latest/api/token", "PUT"),
        ("POST", "/latest/api/token", "PUT"),
    ],
)
def test_other_methods_are_not_allowed(method: str, path: str, allow: str) -> None:
    request = f"{method} {path} HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n"
    (reply,) = talk(request)
    assert (reply.status, reply.headers["allow"]) == (405, allow)


# one connection


def test_two_requests_on_one_connection_are_both_answered() -> None:
    doc = document()
    token = token_for(doc)
    first, second = talk(get("/latest/meta-data/ami-id", token), put_token("60"), doc=doc)
    assert (first.status, first.body) == (200, b"ami-0abcdef1234567890")
    assert first.headers["connection"] == "keep-alive"
    assert second.status == 200


def test_connection_close_ends_the_connection_after_its_answer() -> None:
    doc = document()
    token = token_for(doc)
    close = "Connection: close\r\n"
    replies = talk(get("/latest/meta-data/ami-id", token, close), get("/latest/", token), doc=doc)
    assert [reply.status for reply in replies] == [200]
    assert replies[0].headers["connection"] == "close"


def test_http_1_0_closes_unless_it_asks_to_keep_alive() -> None:
    doc = document(http_tokens="optional")
    request = "GET /latest/meta-data/mac HTTP/1.0\r\n\r\n"
    (only,) = talk(request, request, doc=doc)
    assert (only.body, only.headers["connection"]) == (b"52:54:00:12:34:56", "close")
    kept = "GET /latest/meta-data/mac HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
    replies = talk(kept, request, doc=doc)
    assert [reply.headers["connection"] for reply in replies] == ["keep-alive", "close"]


def test_a_request_body_is_read_by_its_length_not_taken_for_a_request() -> None:
    body = "GET /latest/user-data HTTP/1.1\r\n\r\n"  # looks like a request, but is a body
    request = put_token("60", headers=f"Content-Length: {len(body)}\r\n") + body
    doc = document()
    first, second = talk(request, get("/latest/meta-data/ami-id", token_for(doc)), doc=doc)
    assert (first.status, second.body) == (200, b"ami-0abcdef1234567890")


def test_lf_line_endings_and_empty_lines_before_a_request_are_accepted() -> None:
    doc = document(http_tokens="optional")
    (reply,) = talk("\r\n\nGET /latest/meta-data/local-ipv4 HTTP/1.1\nHost: x\n\n", doc=doc)
    assert (reply.status, reply.body) == (200, b"169.254.0.15")


def test_headers_are_case_insensitive_and_trimmed() -> None:
    doc = document()
    token = token_for(doc)
    request = (
        f"GET /latest/meta-data/ami-id HTTP/1.1\r\nx-AWS-ec2-METADATA-token:  {token} \r\n\r\n"
    )
    assert talk(request, doc=doc)[0].status == 200


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        ("GARBAGE\r\n\r\n", 400),
        ("GET /latest/\r\n\r\n", 400),
        ("GET  /latest/ HTTP/1.1\r\n\r\n", 400),
        ("GET latest/ HTTP/1.1\r\n\r\n", 400),
        ("GET /latest/ HTTP/1.1\r\nno colon here\r\n\r\n", 400),
        ("GET /latest/ HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ("GET /latest/ HTTP/1.1\r\n folded: x\r\n\r\n", 400),
        ("GET /latest/ HTTP/1.1\r\nX: a\x01b\r\n\r\n", 400),
        ("PUT /latest/api/token HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        ("PUT /latest/api/token HTTP/1.1\r\nContent-Length: ten\r\n\r\n", 400),
        ("PUT /latest/api/token HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        ("PUT /latest/api/token HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
        ("PUT /latest/api/token HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
        ("GET /latest/ HTTP/2.0\r\n\r\n", 505),
        ("GET /" + "a" * 9000 + " HTTP/1.1\r\n\r\n", 400),
        ("GET /latest/ HTTP/1.1\r\n" + "X: y\r\n" * 101 + "\r\n", 400),
    ],
)
def test_a_malformed_request_is_answered_then_the_connection_closes(
    request_text: str, status: int
) -> None:
    replies = talk(request_text, get("/latest/meta-data/instance-id"))
    assert [reply.status for reply in replies] == [status]
    assert replies[0].headers["connection"] == "close"


def test_a_connection_that_ends_mid_request_gets_no_answer() -> None:
    assert talk("GET /latest/ HTTP/1.1\r\nHost: x\r\n") == []
    assert talk(put_token("60", headers="Content-Length: 10\r\n") + "short") == []
    assert talk("") == []


def test_a_request_that_breaks_the_service_gets_a_500_and_the_connection_closes(capsys) -> None:
    def broken(request: object) -> object:
        raise KeyError("a bug")

    answers = io.BytesIO()
    requests = io.BytesIO((get("/latest/") * 2).encode())
    imds._exchange(requests, answers, broken, lambda: NOW)  # type: ignore[arg-type]
    (reply,) = parse(answers.getvalue())
    assert (reply.status, reply.headers["connection"]) == (500, "close")
    assert b"Traceback" not in answers.getvalue()
    assert "cannot answer GET /latest/: KeyError('a bug')" in capsys.readouterr().err


# the document


def test_a_document_round_trips_through_its_file_readable_by_its_owner_only(tmp_path) -> None:
    path = tmp_path / "metadata.json"
    for doc in (document(), document(user_data=None), document(user_data=b"")):
        imds.write_document(path, doc)
        assert imds.read_document(path) == doc
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.json"]  # no temporary left


def test_user_data_is_stored_as_base64(tmp_path) -> None:
    path = tmp_path / "metadata.json"
    imds.write_document(path, document())
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert base64.b64decode(stored["user_data"]) == USER_DATA


def test_new_documents_get_fresh_secrets_and_ec2s_hostnames() -> None:
    first, second = document(), document()
    assert first.secret != second.secret and len(first.secret) == 64
    assert set(first.secret) <= set("0123456789abcdef")
    assert first.hostname == "ip-169-254-0-15.ec2.internal"
    assert document(region="eu-west-1").hostname == "ip-169-254-0-15.eu-west-1.compute.internal"
    assert document(hostname="web-1").hostname == "web-1"
    assert (first.account_id, first.http_endpoint) == ("123456789012", "enabled")


def test_writing_a_document_without_a_secret_makes_one(tmp_path) -> None:
    path = tmp_path / "metadata.json"
    imds.write_document(path, replace(document(), secret=""))
    assert len(imds.read_document(path).secret) == 64


@pytest.mark.parametrize(
    "change",
    [{"http_tokens": "sometimes"}, {"http_endpoint": "off"}, {"user_data": "text"}, {"mac": 5}],
)
def test_a_document_with_a_wrong_value_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(change))):
        document(**change)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"instance_id": "i-1"}', "\xff"])
def test_a_file_that_is_not_a_document_is_a_value_error(tmp_path, text: str) -> None:
    path = tmp_path / "metadata.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError):
        imds.read_document(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [("colour", "blue"), ("secret", ""), ("user_data", "not base64!"), ("http_tokens", "never")],
)
def test_a_document_file_with_a_wrong_field_is_a_value_error(tmp_path, key, value) -> None:
    path = tmp_path / "metadata.json"
    imds.write_document(path, document())
    stored = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**stored, key: value}), encoding="utf-8")
    with pytest.raises(ValueError):
        imds.read_document(path)


def test_a_missing_document_is_an_os_error(tmp_path) -> None:
    with pytest.raises(OSError):
        imds.read_document(tmp_path / "absent.json")


# the command QEMU runs


def test_the_command_runs_this_module_on_the_absolute_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    command = imds.command(Path("m1/metadata.json"), "/usr/bin/python3")
    assert command == f"/usr/bin/python3 -m bake.local.imds {tmp_path}/m1/metadata.json"
    assert "," not in imds.command(tmp_path / "metadata.json")


@pytest.mark.parametrize(
    ("path", "python"),
    [
        ("/state/a,b/metadata.json", "/usr/bin/python3"),
        ("/state/a b/metadata.json", "/usr/bin/python3"),
        ("/state/a\tb/metadata.json", "/usr/bin/python3"),
        ("/state/it's/metadata.json", "/usr/bin/python3"),
        ("/state/metadata.json", "/opt/my python/bin/python3"),
        ("/state/metadata.json", "/opt/py,thon/bin/python3"),
        ("/state/metadata.json", ""),
    ],
)
def test_a_command_qemu_would_split_is_refused(path: str, python: str) -> None:
    with pytest.raises(ValueError, match="comma, whitespace"):
        imds.command(Path(path), python)


# the process


def run_service(tmp_path: Path, doc_path: Path, requests: bytes, *flags: str):
    return subprocess.run(
        [sys.executable, *flags, "-m", "bake.local.imds", str(doc_path)],
        input=requests,
        capture_output=True,
        cwd=tmp_path,  # QEMU's working directory is none of the module's business
        timeout=30,
        check=False,
    )


def test_the_module_answers_a_connection_on_stdin_and_stdout(tmp_path) -> None:
    doc_path = tmp_path / "metadata.json"
    imds.write_document(doc_path, document())
    put = put_token("60").encode()
    (token_reply,) = parse(run_service(tmp_path, doc_path, put).stdout)
    token = token_reply.body.decode()
    requests = get("/latest/meta-data/instance-id", token) + get("/latest/user-data", token)
    result = run_service(tmp_path, doc_path, requests.encode())
    assert (result.returncode, result.stderr) == (0, b"")
    ids, user_data = parse(result.stdout)
    assert (ids.status, ids.body, user_data.body) == (200, b"i-0123456789abcdef0", USER_DATA)


def test_an_unreadable_document_is_a_500_and_a_line_on_stderr(tmp_path) -> None:
    result = run_service(tmp_path, tmp_path / "absent.json", get("/latest/").encode())
    (reply,) = parse(result.stdout)
    assert (reply.status, reply.headers["connection"]) == (500, "close")
    assert result.returncode == 1
    assert result.stderr.decode().startswith("bake.local.imds: cannot read the instance document")
    assert b"Traceback" not in result.stdout + result.stderr


def test_under_libslirp_nothing_but_http_reaches_the_guest(tmp_path) -> None:
    """libslirp gives the command one socket as stdin, stdout and stderr, as here."""
    guest, service = socket.socketpair()
    with guest, service:
        process = subprocess.Popen(
            [sys.executable, "-m", "bake.local.imds", str(tmp_path / "absent.json")],
            stdin=service,
            stdout=service,
            stderr=service,
            cwd=tmp_path,
        )
        service.close()
        guest.sendall(get("/latest/").encode())
        received = b""
        while chunk := guest.recv(65536):
            received += chunk
        assert process.wait(timeout=30) == 1
    (reply,) = parse(received)  # a complaint on stderr would break this parse
    assert reply.status == 500


def test_the_module_imports_nothing_outside_the_standard_library(tmp_path) -> None:
    doc_path = tmp_path / "metadata.json"
    imds.write_document(doc_path, document(http_tokens="optional"))
    report = tmp_path / "modules.json"
    wrapper = (
        "import json, runpy, sys\n"
        "before = set(sys.modules)\n"
        f"sys.argv = ['imds', {str(doc_path)!r}]\n"
        "try:\n"
        "    runpy.run_module('bake.local.imds', run_name='__main__', alter_sys=True)\n"
        "except SystemExit:\n"
        "    pass\n"
        f"open({str(report)!r}, 'w').write(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    requests = (get("/latest/meta-data/instance-id") + get("/latest/user-data")).encode()
    result = subprocess.run(
        [sys.executable, "-c", wrapper], input=requests, capture_output=True, timeout=30
    )
    assert [reply.status for reply in parse(result.stdout)] == [200, 200], result.stderr
    imported = json.loads(report.read_text(encoding="utf-8"))
    assert "bake.local" in imported  # the wrapper saw the module's imports
    outside = [
        name
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names
        and name not in ("bake", "bake.local", "bake.local.imds")
    ]
    assert outside == []


def test_an_instance_with_a_profile_gets_its_roles_credentials() -> None:
    doc = document(iam_role="goldenbake-local")
    token = token_for(doc)

    listing, credentials, info = talk(
        get("/latest/meta-data/iam/security-credentials/", token),
        get("/latest/meta-data/iam/security-credentials/goldenbake-local", token),
        get("/latest/meta-data/iam/info", token),
        doc=doc,
    )

    assert (listing.status, listing.body) == (200, b"goldenbake-local")
    issued = json.loads(credentials.body)
    assert issued["Code"] == "Success" and issued["Type"] == "AWS-HMAC"
    assert issued["AccessKeyId"].startswith("ASIA") and len(issued["AccessKeyId"]) <= 20
    assert issued["SecretAccessKey"] and issued["Token"]
    assert issued["Expiration"] > issued["LastUpdated"]
    assert json.loads(info.body)["InstanceProfileArn"].endswith(
        ":instance-profile/goldenbake-local"
    )


def test_an_instance_without_a_profile_has_no_iam() -> None:
    doc = document()
    token = token_for(doc)
    listing, credentials = talk(
        get("/latest/meta-data/", token),
        get("/latest/meta-data/iam/security-credentials/", token),
        doc=doc,
    )
    assert b"iam/" not in listing.body.split(b"\n")
    assert credentials.status == 404
