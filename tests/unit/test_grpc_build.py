"""The gRPC modules' build hook, the Serve options, status mapping, and HAProxy's gRPC frontend hardened."""
from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from dwray import errors as dw
from dwray.config import DwrayConfig, GatewayConfig
from dwray.proto import build
from serve_apps.grpc_auth import GrpcRefusal
from serve_apps.grpc_call import status_of
from serve_apps.grpc_gateway import SERVICER_FUNCTION, grpc_options
from serve_apps.haproxy_hardening import CLIENT_ADDRESS_HEADER, harden, real_binary

ROOT = Path(__file__).resolve().parents[2]


def test_protoc_generates_both_modules_with_the_package_import(tmp_path: Path) -> None:
    generated = build.generate(ROOT, tmp_path)
    assert [path.name for path in generated] == ["dwray_pb2.py", "dwray_pb2_grpc.py"]
    service = generated[1].read_text()
    assert "from dwray.proto import dwray_pb2" in service and "def add_WarehouseServicer_to_server" in service
    assert "class WarehouseStub" in service


def test_the_service_methods_and_their_streaming_kinds() -> None:
    from dwray.proto import dwray_pb2

    methods = {m.name: (m.client_streaming, m.server_streaming)
               for m in dwray_pb2.DESCRIPTOR.services_by_name["Warehouse"].methods}
    assert methods == {"Put": (True, False), "Get": (False, True), "Head": (False, False),
                       "List": (False, False), "Delete": (False, False)}


def test_grpc_options_only_with_a_grpc_port(tmp_path: Path) -> None:
    assert grpc_options(DwrayConfig(data_dir=tmp_path)) is None
    config = DwrayConfig(data_dir=tmp_path, gateway=GatewayConfig(grpc_port=50123))
    assert grpc_options(config) == {"port": 50123, "grpc_servicer_functions": [SERVICER_FUNCTION]}
    from ray.serve.config import gRPCOptions

    assert gRPCOptions(**grpc_options(config)).grpc_servicer_func_callable  # importable, as Serve imports it


@pytest.mark.parametrize(("error", "code"), [
    (dw.ObjectNotFound("b", "k", None), grpc.StatusCode.NOT_FOUND),
    (dw.BucketNotFound("b"), grpc.StatusCode.NOT_FOUND),
    (dw.AccessDenied("s3:GetObject", "b/k"), grpc.StatusCode.PERMISSION_DENIED),
    (dw.InvalidRange("bytes=9-", 5), grpc.StatusCode.OUT_OF_RANGE),
    (dw.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
    (dw.Backpressure("memory", 2.0), grpc.StatusCode.RESOURCE_EXHAUSTED),
    (GrpcRefusal(grpc.StatusCode.UNAUTHENTICATED, "who?"), grpc.StatusCode.UNAUTHENTICATED),
])
def test_dwray_errors_become_grpc_status_codes(error: BaseException, code: grpc.StatusCode) -> None:
    assert status_of(error)[0] == code


def test_other_errors_are_internal_and_opaque() -> None:
    code, details = status_of(RuntimeError("password=hunter2"))
    assert code == grpc.StatusCode.INTERNAL and "hunter2" not in details


def _serve_config_with_grpc(folder: Path) -> Path:
    """``haproxy.cfg`` as Serve writes it with gRPC on: one HTTP and one gRPC backend."""
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.haproxy import BackendConfig, HAProxyApi, HAProxyConfig, ServerConfig
    from ray.serve.config import HTTPOptions, gRPCOptions

    config = HAProxyConfig(http_options=HTTPOptions(host="127.0.0.1", port=18123),
                           grpc_options=gRPCOptions(port=18124, grpc_servicer_functions=[SERVICER_FUNCTION]),
                           socket_path=str(folder / "admin.sock"), server_state_base=str(folder),
                           server_state_file=str(folder / "server-state"),
                           metrics_socket_path=str(folder / "metrics.sock"), stats_port=18404,
                           metrics_port=19101, is_head=True)
    api = HAProxyApi(cfg=config, config_file_path=str(folder / "haproxy.cfg"))
    api.backend_configs = {
        "dwray": BackendConfig(name="dwray", path_prefix="/", app_name="dwray",
                               servers=[ServerConfig(name="replica-1", host="127.0.0.1", port=18999)]),
        "dwray-grpc": BackendConfig(name="dwray-grpc", path_prefix="/", app_name="dwray",
                                    protocol=RequestProtocol.GRPC,
                                    servers=[ServerConfig(name="replica-1", host="127.0.0.1", port=18998)])}
    api._generate_config_file_internal()
    return folder / "haproxy.cfg"


def test_the_grpc_frontend_is_hardened_and_haproxy_accepts_it(tmp_path: Path) -> None:
    path = _serve_config_with_grpc(tmp_path)
    rendered = path.read_text()
    assert "frontend grpc_frontend" in rendered and "bind 127.0.0.1:18124 proto h2" in rendered
    hardened = harden(rendered, pem=tmp_path / "gateway.pem")
    grpc_section = hardened.split("frontend grpc_frontend", 1)[1].split("\nbackend ", 1)[0]
    assert "ssl crt" in grpc_section and "alpn h2" in grpc_section
    assert f"http-request set-header {CLIENT_ADDRESS_HEADER} %[src]" in grpc_section
    path.write_text(harden(rendered))
    checked = subprocess.run([real_binary(), "-c", "-f", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
