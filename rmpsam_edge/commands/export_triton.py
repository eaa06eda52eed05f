"""``rmpsam-edge export-triton``: write a Triton Inference Server model repository for a bundle (docs/triton.md)."""
import sys

PLATFORM_CHOICES = ("python", "onnxruntime", "tensorrt")


def add_runtime_arguments(p):
    """The options of the repository's python models (export-triton and serve): batching and the runtime inside."""
    from rmpsam_edge.commands.common_args import DEVICE_HELP, add_backend, add_device
    p.add_argument("--max-batch", type=int, default=4, help="encoder max_batch_size: frames of several clients in "
                   "one execution (default 4)")
    p.add_argument("--queue-delay-us", type=int, default=0, help="dynamic batching max queue delay in microseconds "
                   "(default 0: batch what is already waiting)")
    add_backend(p, help_text="python platform: runtime backend inside the server (auto, onnxruntime, openvino)")
    add_device(p, help_text="python platform: the backend's device inside the server: " + DEVICE_HELP +
               " (default: auto's, a GPU when one is usable, else the CPU)")
    p.add_argument("--threads", type=int, default=0, help="python platform: threads per graph model (0: default)")


def add_arguments(p):
    from rmpsam_edge.commands.common_args import add_force, add_model
    add_model(p, required=True)
    p.add_argument("--out", required=True, metavar="REPO", help="model repository folder to write")
    p.add_argument("--platform", default="python", choices=PLATFORM_CHOICES,
                   help="python: runs on the nvidia-pytriton wheel's tritonserver (ONNX Runtime/OpenVINO inside); "
                        "onnxruntime / tensorrt: NVIDIA's Triton container (default python)")
    add_runtime_arguments(p)
    p.add_argument("--instance-kind", default="cpu", choices=["cpu", "gpu"], help="instance group KIND_CPU or "
                   "KIND_GPU for the graph models of the onnxruntime/tensorrt platforms (default cpu)")
    p.add_argument("--instances", type=int, default=1, help="instances per graph model (default 1)")
    add_force(p, "an existing --out")


def run(args) -> int:
    from rmpsam_edge.runtime.bundle import Bundle
    from rmpsam_edge.runtime.triton.repository import write_repository
    bundle = Bundle.open(args.model)
    write_repository(bundle, args.out, platform=args.platform, max_batch=args.max_batch,
                     queue_delay_us=args.queue_delay_us, instance_kind=args.instance_kind, instances=args.instances,
                     backend=args.backend, device=args.device, threads=args.threads, force=args.force)
    note = "" if args.platform == "python" else " (for NVIDIA's Triton container; the wheel's server has no %s " \
        "backend)" % args.platform
    sys.stdout.write("triton repository written: %s (platform %s%s)\n" % (args.out, args.platform, note))
    return 0
