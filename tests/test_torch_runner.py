"""TorchRunner's thread setting is scoped to its own calls: the process keeps its torch threads."""
import numpy as np
import torch

from rmpsam_edge.torch_runner import TorchRunner


class Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.seen = []

    def encode(self, x):
        self.seen.append(torch.get_num_threads())
        return x[:, :1]


def test_threads_only_inside_the_runners_calls():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        model = Recorder()
        runner = TorchRunner(model, threads=2)
        runner.activate()
        assert torch.get_num_threads() == 1  # activating changes nothing process-wide
        out = runner.infer("encoder", {"image": np.zeros((1, 3, 8, 8), np.float32)})
        assert out["features"].shape == (1, 1, 8, 8)
        assert model.seen == [2] and torch.get_num_threads() == 1  # set for the call, restored after it
        assert "2 threads" in runner.describe()
        TorchRunner(model).infer("encoder", {"image": np.zeros((1, 3, 8, 8), np.float32)})
        assert model.seen == [2, 1]  # no threads asked: torch's own setting
    finally:
        torch.set_num_threads(before)
