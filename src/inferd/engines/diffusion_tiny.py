"""A tiny Stable Diffusion pipeline with random weights, written to a folder.

No text-to-image weights can be downloaded where inferd is tested, and none ship in a PyPI
package, so the tests and ``bench/images.py`` build one from diffusers' own classes: a small
``UNet2DConditionModel``, ``AutoencoderKL``, ``CLIPTextModel`` and a byte-level CLIP tokenizer
with no merges. The folder it writes is an ordinary ``save_pretrained`` pipeline that inferd
loads through the same code as a real one; its pictures are noise, but real decodable images
of the requested size, deterministic for a seed. ``inferd images tiny-pipeline PATH`` writes one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict


def _byte_vocab() -> dict[str, int]:
    """Every byte as a CLIP (GPT-2 byte-level) symbol, alone and word-final, plus specials."""
    # GPT-2's byte-to-symbol map: printable bytes stand for themselves, the others are
    # shifted past 255 so that every byte has a visible symbol.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(shifted))]
    vocab: dict[str, int] = {}
    for symbol in [*symbols, *(s + "</w>" for s in symbols)]:
        vocab.setdefault(symbol, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab


def build_tiny_pipeline(path: str | Path, *, seed: int = 0) -> Path:
    """Write a random-weight Stable Diffusion pipeline to ``path``; returns the folder."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tok_dir = folder / "_tokenizer_src"
    tok_dir.mkdir(exist_ok=True)
    vocab = _byte_vocab()
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=16, attention_head_dim=2)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32), in_channels=3, out_channels=3,
        **_vae_blocks(), latent_channels=4, norm_num_groups=16,
        sample_size=256)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"], hidden_size=32, intermediate_size=37,
        layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(vocab), max_position_embeddings=77))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipeline = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipeline.save_pretrained(str(folder), safe_serialization=True)
    for leftover in tok_dir.iterdir():
        leftover.unlink()
    tok_dir.rmdir()
    return folder


class _VaeBlocks(TypedDict):
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]


def _vae_blocks() -> _VaeBlocks:
    return {"down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4}
