"""``rmpsam-edge serve``: serve a bundle on a real tritonserver (the nvidia-pytriton wheel, python backend).

A python-platform repository is written to a temporary folder, tritonserver starts on it (127.0.0.1 unless
--host), no model-control API; health/ready are checked before "up" is printed; Ctrl-C / SIGTERM stop it by PID.
"""
import os
import shutil
import sys
import tempfile
import time


def add_arguments(p):
    from rmpsam_edge.commands.common_args import add_model
    from rmpsam_edge.commands.export_triton import add_runtime_arguments
    add_model(p, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; anything else is "
                   "reachable from the network without authentication: put a TLS/auth proxy in front)")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    add_runtime_arguments(p)
    p.add_argument("--tritonserver", metavar="PATH", help="tritonserver binary (default: the nvidia-pytriton wheel's)")
    p.add_argument("--log", metavar="FILE", help="write tritonserver's log here (default: discarded)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for ready (default 120)")


def run(args) -> int:
    from rmpsam_edge.errors import warn
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.loader import check_device
    from rmpsam_edge.runtime.triton.repository import write_repository
    from rmpsam_edge.runtime.triton.server import TritonServer, find_pytriton

    check_device(args.backend, args.device)
    bundle = Bundle.open(args.model)
    if args.tritonserver is None:
        find_pytriton()  # one line naming the pip install, before anything is written
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn("binding %s: the server is reachable from the network with no authentication; put an authenticating "
             "TLS reverse proxy in front of it (docs/triton.md)" % args.host)
    work = tempfile.mkdtemp(prefix="rmpsam_serve_")
    log = open(args.log, "w") if args.log else None
    server = None
    try:
        repo = write_repository(bundle, os.path.join(work, "repo"), max_batch=args.max_batch,
                                queue_delay_us=args.queue_delay_us, backend=args.backend, device=args.device,
                                threads=args.threads,
                                copy_bundle=False)
        t0 = time.time()
        server = TritonServer(repo, args.host, args.http_port, args.grpc_port, tritonserver=args.tritonserver,
                              log=log)
        server.start(args.ready_timeout)
        sys.stdout.write("triton up in %.1f s (pid %d): %s  %s  (model %s; Ctrl-C stops)\n"
                         % (time.time() - t0, server.proc.pid, server.grpc_url, server.http_url, bundle.path))
        sys.stdout.flush()
        while server.proc.poll() is None:
            time.sleep(0.5)
        from rmpsam_edge.errors import UserError
        raise UserError("tritonserver exited on its own with code %s%s" % (server.proc.returncode,
                                                                             " (see %s)" % args.log if args.log else ""))
    finally:
        if server is not None:
            code = server.stop()
            sys.stderr.write("tritonserver stopped (exit %s)\n" % code)
        if log is not None:
            log.close()
        shutil.rmtree(work, ignore_errors=True)
