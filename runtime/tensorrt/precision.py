"""TensorRT's FP32 pins: the rules of ``rmpsam_edge.runtime.sensitive_layers`` (the one list, shared with quantize)
applied to a TensorRT network: ``nodes_from_network`` reads it as ``Node`` tuples, ``apply_fp32`` pins the
chosen layers (precision and output types)."""
from typing import Dict, List

from ..sensitive_layers import REASONS, Node, nodes_from_onnx, select_fp32, summary  # noqa: F401 - the one list

POLICY = "fp32-pins-v1"  # recorded in the engine key: changing the rules rebuilds engines


def nodes_from_network(network, compat) -> List[Node]:
    """TensorRT INetworkDefinition -> nodes (kind from the layer type and its op)."""
    nodes = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        nodes.append(Node(layer.name, compat.layer_kind(layer), [t.name for t in ins if t is not None],
                          [t.name for t in outs if t is not None]))
    return nodes


def network_outputs(network) -> List[str]:
    return [network.get_output(i).name for i in range(network.num_outputs)]


def apply_fp32(network, compat, chosen: Dict[str, str]) -> int:
    """Set layer precision and output types of the chosen layers; -> how many were pinned."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in chosen and compat.pin_fp32(layer):
            pinned += 1
    return pinned
