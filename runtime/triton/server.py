"""Run the real ``tritonserver`` binary of the ``nvidia-pytriton`` wheel (0.7.0: Triton 2.51, python backend
only) on a model repository: found in this interpreter's site-packages (or given), started with the library
path and PATH the python backend stub needs, health/ready checked, stopped by PID (SIGTERM, then SIGKILL).

Facts (docs/triton.md): the stub must load the interpreter's own libpython (LD_LIBRARY_PATH = LIBDIR +
site-packages/nvidia_pytriton.libs) and import onnxruntime from this environment (its bin first on PATH).
"""
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from typing import List, Optional

from rmpsam_edge.errors import UserError

INSTALL = "pip install nvidia-pytriton==0.7.0 (its own venv: it pins numpy<2; docs/triton.md)"


def find_pytriton() -> str:
    """-> the wheel's ``pytriton/tritonserver`` folder in this interpreter's site-packages."""
    try:
        import importlib.util
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError("tritonserver not found: %s (serve also takes --tritonserver PATH)" % INSTALL)
    root = os.path.join(list(spec.submodule_search_locations)[0], "tritonserver")
    if not os.path.isfile(os.path.join(root, "bin", "tritonserver")):
        raise UserError("%s has no bin/tritonserver; reinstall: %s" % (root, INSTALL))
    return root


def backend_dir(root: str, work: str) -> str:
    """A backends folder with the python backend and the stub for THIS Python version (as PyTriton does)."""
    ver = "%d.%d" % sys.version_info[:2]
    stub = os.path.join(root, "python_backend_stubs", ver, "triton_python_backend_stub")
    if not os.path.isfile(stub):
        raise UserError("the nvidia-pytriton wheel has no python backend stub for Python %s (3.8-3.13)" % ver)
    dst = os.path.join(work, "backends", "python")
    shutil.copytree(os.path.join(root, "backends", "python"), dst, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(stub, dst)
    return os.path.dirname(dst)


def server_env(root: str) -> dict:
    env = dict(os.environ)
    libs = [sysconfig.get_config_var("LIBDIR") or "", os.path.join(os.path.dirname(os.path.dirname(root)),
                                                                     "nvidia_pytriton.libs")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


class TritonServer(object):
    """``with TritonServer(repo, ...) as s:`` -> a running, ready tritonserver; ``stop()`` by PID."""

    def __init__(self, repository: str, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 tritonserver: Optional[str] = None, log=None, shm_mb: int = 64):
        self.repository, self.host = repository, host
        self.http_port, self.grpc_port = int(http_port), int(grpc_port)
        self.binary = tritonserver
        self.log = log
        self.shm_mb = shm_mb
        self.proc = None  # type: Optional[subprocess.Popen]
        self.work = None  # type: Optional[str]

    def command(self, backends: str, cache: str) -> List[str]:
        return [self.binary, "--model-repository", self.repository, "--backend-directory", backends,
                "--cache-directory", cache, "--http-address", self.host, "--http-port", str(self.http_port),
                "--grpc-address", self.host, "--grpc-port", str(self.grpc_port), "--allow-metrics=false",
                "--exit-on-error=true", "--model-control-mode=none", "--log-verbose=0", "--exit-timeout-secs=5",
                "--backend-config=python,shm-default-byte-size=%d" % (self.shm_mb << 20),
                "--backend-config=python,shm-growth-byte-size=%d" % (16 << 20)]

    def start(self, timeout: float = 120.0) -> "TritonServer":
        root = None
        if self.binary is None:
            root = find_pytriton()
            self.binary = os.path.join(root, "bin", "tritonserver")
        elif not os.path.isfile(self.binary):
            raise UserError("--tritonserver %s does not exist; %s" % (self.binary, INSTALL))
        else:
            root = os.path.dirname(os.path.dirname(os.path.abspath(self.binary)))
        self.work = tempfile.mkdtemp(prefix="rmpsam_triton_")
        backends = backend_dir(root, self.work)
        cache = os.path.join(self.work, "caches")
        os.makedirs(cache)
        out = self.log if self.log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(backends, cache), env=server_env(root), stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def http_url(self) -> str:
        return "http://%s:%d" % (_client_host(self.host), self.http_port)

    @property
    def grpc_url(self) -> str:
        return "grpc://%s:%d" % (_client_host(self.host), self.grpc_port)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.http_url + "/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - not up (yet)
            return False

    def wait_ready(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise UserError("tritonserver exited with code %s while loading %s (see its log)"
                                % (self.proc.returncode, self.repository))
            if self.ready():
                return
            time.sleep(0.25)
        raise UserError("tritonserver was not ready after %.0f s (ports %d/%d busy? see its log)"
                        % (timeout, self.http_port, self.grpc_port))

    def stop(self, timeout: float = 15.0) -> Optional[int]:
        """SIGTERM to the PID, wait, SIGKILL after ``timeout``; -> exit code."""
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, signal.SIGTERM)
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: the stubs go too
                    code = self.proc.wait(10)
                except ProcessLookupError:
                    pass
            code = self.proc.returncode if code is None else code
            try:  # python backend stubs left behind (they normally exit with the server)
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc = None
        if self.work:
            shutil.rmtree(self.work, ignore_errors=True)
            self.work = None
        return code

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else ("[%s]" % host if ":" in host else host)
