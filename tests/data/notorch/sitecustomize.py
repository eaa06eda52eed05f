"""Put on PYTHONPATH by tests: makes `import torch` fail as if torch were not installed."""
import sys


class _NoTorch(object):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch' (blocked by the test)", name="torch")
        return None

    find_module = None


sys.meta_path.insert(0, _NoTorch())
