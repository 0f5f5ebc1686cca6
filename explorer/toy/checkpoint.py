"""Training states on disk: the resumable state (with optimisers) and its fp16 export without optimisers, small
enough to commit so a later session continues with --init-from where checkpoints/ did not survive."""
from __future__ import annotations

import os

import torch


def export_weights(state_path: str, out: str) -> None:
    """A training state (model, dense head, probe; no optimiser) as fp16 safetensors, small enough to commit,
    so a later session can continue with --init-from where checkpoints/ did not survive."""
    from safetensors.torch import save_file

    st = torch.load(state_path, map_location="cpu", weights_only=False)
    parts = ("model", "head", "probe", "object_probe", "hay_probe", "box_probe")
    tensors = {f"{part}.{k}": v.half().contiguous() for part in parts if part in st
               for k, v in st[part].items() if v.is_floating_point()}
    save_file(tensors, out, metadata={"stage": st["stage"], "step": str(st["step"]), "patch": str(st["patch"])})


def import_weights(path: str) -> dict:
    """The inverse of export_weights: a state dict without optimiser (fp32), ready to resume from."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        meta = f.metadata()
        st = {"stage": meta["stage"], "step": int(meta["step"]), "patch": int(meta["patch"])}
        for key in f.keys():
            part, name = key.split(".", 1)
            st.setdefault(part, {})[name] = f.get_tensor(key).float()
    return st


def save_state(path, **state):
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
