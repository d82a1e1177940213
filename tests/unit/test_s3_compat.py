"""The README's S3 compatibility matrix cannot drift from the gateway.

Each S3 operation's request shape (method, path, query, required headers) is
taken from botocore's service model, the same one the AWS SDKs build requests
from, so "not supported" is checked against the request a client really sends.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from urllib.parse import parse_qsl

import botocore.session
import pytest

from serve_apps import s3_compat
from serve_apps.s3_api import S3Api
from serve_apps.s3_call import UNSUPPORTED_SUBRESOURCES, classify

README = Path(__file__).resolve().parents[2] / "README.md"
S3_MODEL = botocore.session.get_session().get_service_model("s3")


def request_for(operation: str) -> tuple[str, str | None, str, dict[str, str], dict[str, str]]:
    """The method, bucket, key, query and headers of a minimal request for ``operation``, as botocore sends it."""
    model = S3_MODEL.operation_model(operation)
    path, _, query = model.http["requestUri"].partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    headers: dict[str, str] = {}
    shape = model.input_shape
    for name in shape.required_members if shape is not None else ():
        where = shape.members[name].serialization
        if where.get("location") == "header":
            headers[where["name"].lower()] = "x"
        elif where.get("location") == "querystring":
            params[where["name"]] = "1"
    bucket = "bucket" if "{Bucket}" in path else path.strip("/") or None
    return model.http["method"], bucket, "key" if "{Key+}" in path else "", params, headers


def test_every_operation_has_one_row_and_every_handler_a_note() -> None:
    operations = set(s3_compat.OPERATIONS)
    assert len(operations) == len(s3_compat.OPERATIONS), "an operation is listed twice"
    assert operations == set(S3_MODEL.operation_names), (
        "the matrix must list exactly the S3 operations of botocore's service model; new or renamed: "
        f"{sorted(operations ^ set(S3_MODEL.operation_names))}")
    handled = set(S3Api.HANDLERS)
    assert handled <= operations, f"handlers for operations S3 does not have: {sorted(handled - operations)}"
    assert set(s3_compat.HANDLED) == handled, (
        f"handlers without a matrix note: {sorted(handled - set(s3_compat.HANDLED))}; notes claiming support "
        f"without a handler: {sorted(set(s3_compat.HANDLED) - handled)}")
    assert not set(s3_compat.NOT_SUPPORTED) & handled and set(s3_compat.NOT_SUPPORTED) <= operations
    assert set(s3_compat.ROUTED_AS) <= set(s3_compat.NOT_SUPPORTED)
    for operation, method in S3Api.HANDLERS.items():
        assert inspect.iscoroutinefunction(getattr(S3Api, method)), (operation, method)
    rows = {row.operation: row.status for row in s3_compat.operation_rows()}
    assert {name for name, status in rows.items() if status != "not supported"} == handled
    assert {status for status, _ in s3_compat.HANDLED.values()} <= {"supported", "partial"}
    # The status follows the table: an operation that loses its handler becomes "not supported".
    fewer = {name: method for name, method in S3Api.HANDLERS.items() if name != "PutObjectTagging"}
    assert "| PutObjectTagging |" not in s3_compat.render(fewer)
    assert "PutObjectTagging" in s3_compat.render(fewer).split("Not supported", 1)[1]
    # The instance table the gateway dispatches by is built from the same class-level table.
    api = S3Api(None, None, executor=None, max_object_size=1, max_metadata_bytes=1)
    assert {name: handler.__name__ for name, handler in api.handlers.items()} == dict(S3Api.HANDLERS)


def test_classify_routes_each_operation_as_the_matrix_says() -> None:
    for operation in s3_compat.OPERATIONS:
        method, bucket, key, params, headers = request_for(operation)
        if operation in S3Api.HANDLERS:
            expected = operation
        else:
            expected = s3_compat.ROUTED_AS.get(operation, "Unsupported")
        assert classify(method, bucket, key, params, headers) == expected, (operation, method, bucket, key, params)


@pytest.mark.parametrize("subresource", sorted(UNSUPPORTED_SUBRESOURCES))
def test_unsupported_subresources_are_never_another_operation(subresource: str) -> None:
    for method in ("GET", "PUT", "POST", "DELETE", "HEAD"):
        for key in ("", "key"):
            # Alongside parameters that would otherwise pick a supported operation.
            for extra in ({}, {"uploadId": "u", "partNumber": "1"}, {"versioning": "", "acl": ""}):
                params = {subresource: "", **extra}
                assert classify(method, "bucket", key, params, {"x-amz-copy-source": "/b/k"}) == "Unsupported", \
                    (method, key, params)


def test_readme_section_is_the_rendered_matrix() -> None:
    text = README.read_text(encoding="utf-8")
    assert text.count(s3_compat.BEGIN) == 1 and text.count(s3_compat.END) == 1
    section = text.split(s3_compat.BEGIN, 1)[1].split(s3_compat.END, 1)[0]
    assert section == "\n" + s3_compat.render(), (
        f"README.md's S3 compatibility matrix is out of date: run `{s3_compat.REGENERATE}`")
    # The section belongs to the S3 part of the README, after `dw up` and before the Ray driver part.
    assert text.index("## Over S3") < text.index(s3_compat.BEGIN) < text.index("## From a Python driver")


def test_write_readme_replaces_only_the_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{s3_compat.BEGIN}\nstale | row\n{s3_compat.END}\ntail\n", encoding="utf-8")
    assert s3_compat.main(["--write-readme", "--readme", str(readme)]) == 0
    written = readme.read_text(encoding="utf-8")
    assert written == f"# top\n{s3_compat.BEGIN}\n{s3_compat.render()}{s3_compat.END}\ntail\n"
    assert s3_compat.main(["--write-readme", "--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == written and "up to date" in capsys.readouterr().out
    readme.write_text("no markers\n", encoding="utf-8")
    with pytest.raises(ValueError, match="s3-compat"):
        s3_compat.main(["--write-readme", "--readme", str(readme)])


def test_rendered_matrix_names_each_operation_once() -> None:
    rendered = s3_compat.render()
    named: list[str] = []
    tables = [line for line in rendered.splitlines() if line.startswith("|")]
    for line in tables:
        assert line.count(" | ") - line.count("\\|") == 2, line  # three cells (escaped pipes inside notes)
    operations_table = tables[2:tables.index("| Headers | Status | Notes |")]
    named += [line.split(" | ", 1)[0].removeprefix("| ") for line in operations_table]
    for line in rendered.splitlines():
        if line.startswith("- "):
            named += line[2:].split(":", 1)[0].split(", ")
    assert sorted(named) == sorted(s3_compat.OPERATIONS)
    assert "x-amz-server-side-encryption" in rendered and "CRC64NVME" in rendered
