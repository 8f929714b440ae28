"""MemorySAM: the modality images of one instant as a frame sequence through SAM 2's memory.

Frame 0 gets ``no_mem_embed``; frame k ≥ 1 cross-attends (SAM 2 memory attention) to the memories
(memory encoder of features + predicted mask) and object pointers of every earlier frame, all stored
as conditioning frames. The SAM 2 mask decoder is semantic: one mask token per class, no prompts.
Class logits are averaged over frames (the paper's memory residual connection).

Two forwards over the same weights:

* :meth:`MemorySAM.forward` — the engine path: one batched image-encoder call for all frames, the
  memory encoder skipped for the last frame, logits averaged at 1/4 resolution then upsampled once
  (bilinear upsampling is linear, so this equals averaging full-resolution logits).
* :meth:`MemorySAM.forward_reference` — the naive path MemorySAM's code takes: one ``forward_image``
  per modality and SAM 2's own ``_track_step`` per frame in sequence; kept to measure and test against.

Memory across time (``model.temporal_memory: K``; ``forward(..., past=[...])``). SAM 2 built its memory for video:
a frame attends to its conditioning frames (temporal slot ``maskmem_tpos_enc[num_maskmem - 1]``) and to the
memories of the last ``num_maskmem - 1`` frames, the one ``d`` frames back at ``maskmem_tpos_enc[d - 1]``, plus
their object pointers at their frame distance. Here an instant's modality frames stay conditioning frames of each
other, as in MemorySAM, and each of the last K instants adds one non-conditioning memory at slot ``d - 1`` (d = 1
for the previous instant, K ≤ ``num_maskmem - 1`` = 6): the memory of that instant's *last* frame (memory encoder
of its raw features and its predicted mask, which has seen every earlier modality through the memory chain) and
its object pointer. Frame 0 (RGB) then runs memory attention over the past instants instead of getting
``no_mem_embed``. Object pointers are placed as SAM 2 places video frames: at their distance in frames of the
flattened sequence (``k + (d - 1)·M + 1`` for the past instant d seen from frame k of M configured modalities),
normalised by ``max_obj_ptrs_in_encoder - 1`` (15, SAM 2's video setting) whenever a model runs in temporal mode.
``past=None`` is today's path, unchanged (and ``K = 0`` always takes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE, SAM2Base
from sam2.modeling.sam2_utils import get_1d_sine_pe
from torch import nn


@dataclass
class FrameHeads:
    """What the semantic decoder gives for one frame."""

    class_logits: torch.Tensor  # [B, C, S/4, S/4] float32
    memory_mask_logits: torch.Tensor  # [B, 1, S/4, S/4]: best-IoU class, object-score gated (SAM 2)
    obj_ptr: torch.Tensor  # [B, 256]
    object_score_logits: torch.Tensor  # [B, 1]


@dataclass
class InstantMemory:
    """What one instant leaves for the next ones: its last frame's memory-encoder output and object pointer."""

    features: torch.Tensor  # [B, mem_dim, H/16, W/16]
    pos_enc: torch.Tensor  # [B, mem_dim, H/16, W/16] (SAM 2's sine encoding of the memory)
    obj_ptr: torch.Tensor  # [B, hidden_dim]

    def detached(self) -> InstantMemory:
        return InstantMemory(self.features.detach(), self.pos_enc.detach(), self.obj_ptr.detach())


class MemorySAM(nn.Module):
    """SAM 2 with a semantic mask decoder, run over a sequence of modality frames."""

    def __init__(
        self,
        sam: SAM2Base,
        num_classes: int,
        gate_logits_by_object_score: bool = False,
        num_modalities: int | None = None,
    ) -> None:
        super().__init__()
        if sam.sam_mask_decoder.num_multimask_outputs != num_classes:
            raise ValueError("the SAM 2 mask decoder must have one multimask output per class")
        if not (sam.num_maskmem > 0 and sam.directly_add_no_mem_embed and sam.use_obj_ptrs_in_encoder):
            raise ValueError("MemorySAM needs a SAM 2 config with memory, object pointers, directly_add_no_mem_embed")
        if 0 <= sam.max_cond_frames_in_attn < 4:
            raise ValueError("MemorySAM attends to every earlier modality frame: max_cond_frames_in_attn must be -1")
        self.sam = sam
        self.num_classes = num_classes
        self.gate_logits_by_object_score = gate_logits_by_object_score
        self.num_modalities = num_modalities

    def pointer_frames(self, num_frames: int) -> int:
        """Frame count that scales SAM 2.1's object-pointer temporal positions: the configured modality count.

        SAM 2.1 divides a pointer's frame distance by ``min(num_frames, 16) - 1``, so with the present-frame
        count a missing sensor would re-scale every pointer position the model learnt; the configured count
        keeps distance d encoded the same whatever is missing (equal to SAM 2 when every modality is present).
        """
        return max(num_frames, self.num_modalities or 0)

    @property
    def image_size(self) -> int:
        return self.sam.image_size

    @property
    def max_temporal_memory(self) -> int:
        """The most past instants SAM 2's non-conditioning temporal slots can place (``num_maskmem - 1``)."""
        return self.sam.num_maskmem - 1

    # ------------------------------------------------------------------ building blocks
    def encode_images(self, images: torch.Tensor):
        """Shared Hiera + FPN on ``[N, 3, S, S]`` → flattened per-level features, pos-encs and sizes."""
        backbone_out = self.sam.forward_image(images)
        _, feats, pos, sizes = self.sam._prepare_backbone_features(backbone_out)
        return feats, pos, sizes

    def _encode_in_chunks(self, images: torch.Tensor, chunk: int):
        """CPU inference: encode ``chunk`` images at a time. Same per-image results as one batched call, but
        the activations stay cache-sized: on a 2-core CPU 4 single-frame calls were ~5-10 % faster than one batch of 4
        and peak memory ~25 % lower. GPUs (and training, which needs one graph) keep the batched call."""
        parts = [self.encode_images(images[i : i + chunk]) for i in range(0, images.size(0), chunk)]
        feats = [torch.cat([p[0][level] for p in parts], dim=1) for level in range(len(parts[0][0]))]
        # position encodings do not depend on the image: broadcast the first one instead of concatenating copies
        pos = [level[:, :1].expand(-1, images.size(0), -1) for level in parts[0][1]]
        return feats, pos, parts[0][2]

    def _no_prompt_embeddings(self, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        coords = torch.zeros(batch, 1, 2, device=device)
        labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
        return self.sam.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)

    def condition_on_memory(
        self,
        feat: torch.Tensor,
        pos: torch.Tensor,
        size: tuple[int, int],
        memories: list[dict[str, torch.Tensor]],
        num_frames: int,
        past: Sequence[InstantMemory] | None = None,
    ) -> torch.Tensor:
        """SAM 2's ``_prepare_memory_conditioned_features`` for MemorySAM's case, where every earlier frame is a
        conditioning frame: ``feat [HW, B, C]`` of frame ``k = len(memories)`` → ``[B, C, H, W]``.

        Same values as SAM 2 (tested against ``_track_step``), but the object pointers' temporal positions are
        built on the device: SAM 2 copies them from a host list every frame, which a CUDA graph cannot capture.
        ``past`` (temporal mode, newest first): the memories of the last instants, as SAM 2's non-conditioning
        frames (module docstring); ``None`` is the modality-only path.
        """
        sam = self.sam
        batch, channels, (height, width) = feat.size(1), sam.hidden_dim, size
        k = len(memories)
        recent = list(past or ())
        if k == 0 and not recent:  # frame 0: no memory yet (directly_add_no_mem_embed)
            return (feat + sam.no_mem_embed).permute(1, 2, 0).view(batch, channels, height, width)
        newest_tpos = sam.maskmem_tpos_enc[sam.num_maskmem - 1]  # conditioning frames all have t_pos 0
        memory = [m["maskmem_features"].flatten(2).permute(2, 0, 1) for m in memories]
        memory_pos = [m["maskmem_pos_enc"][-1].flatten(2).permute(2, 0, 1) + newest_tpos for m in memories]
        for d, instant in enumerate(recent, start=1):  # SAM 2: the frame d back gets maskmem_tpos_enc[d - 1]
            memory.append(instant.features.flatten(2).permute(2, 0, 1))
            memory_pos.append(instant.pos_enc.flatten(2).permute(2, 0, 1) + sam.maskmem_tpos_enc[d - 1])
        pointers = torch.stack([m["obj_ptr"] for m in memories] + [p.obj_ptr for p in recent], dim=0)
        if sam.add_tpos_enc_to_obj_ptrs:
            distance = torch.arange(k, 0, -1, device=feat.device)  # k - t for t = 0..k-1 (SAM 2's signed t_diff)
            max_pointers = min(num_frames, sam.max_obj_ptrs_in_encoder)
            if past is not None:  # temporal mode: the flattened video's frame distances, SAM 2's video scale
                distance = torch.cat([distance, self._past_pointer_distance(k, len(recent), num_frames, feat.device)])
                max_pointers = sam.max_obj_ptrs_in_encoder
            tpos_dim = channels if sam.proj_tpos_enc_in_obj_ptrs else sam.mem_dim
            pointer_pos = get_1d_sine_pe(distance / (max_pointers - 1), dim=tpos_dim)
            pointer_pos = sam.obj_ptr_tpos_proj(pointer_pos).unsqueeze(1).expand(-1, batch, sam.mem_dim)
        else:
            pointer_pos = pointers.new_zeros(pointers.size(0), batch, sam.mem_dim)
        if sam.mem_dim < channels:  # a pointer becomes channels // mem_dim memory tokens
            split = channels // sam.mem_dim
            pointers = pointers.reshape(-1, batch, split, sam.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
            pointer_pos = pointer_pos.repeat_interleave(split, dim=0)
        out = sam.memory_attention(
            curr=[feat],
            curr_pos=[pos],
            memory=torch.cat([*memory, pointers], dim=0),
            memory_pos=torch.cat([*memory_pos, pointer_pos], dim=0),
            num_obj_ptr_tokens=pointers.shape[0],
        )
        return out.permute(1, 2, 0).view(batch, channels, height, width)

    @staticmethod
    def _past_pointer_distance(k: int, instants: int, frames_per_instant: int, device: torch.device) -> torch.Tensor:
        """Frame distance from frame ``k`` to the last frame of each of the last ``instants`` instants (newest
        first) in the flattened sequence of ``frames_per_instant`` frames per instant: ``k + (d - 1)·M + 1``."""
        d = torch.arange(1, instants + 1, device=device)
        return k + (d - 1) * frames_per_instant + 1

    def semantic_heads(
        self,
        pix_feat: torch.Tensor,
        high_res: list[torch.Tensor],
        prompts: tuple[torch.Tensor, torch.Tensor],
        image_pe: torch.Tensor | None = None,
    ) -> FrameHeads:
        """SAM 2's ``_forward_sam_heads`` with class tokens; memory mask/pointer follow SAM 2 exactly.

        ``image_pe``: the prompt encoder's dense positional encoding, computed once per forward by the caller
        (it depends only on the feature size); ``None`` computes it here.
        """
        sam = self.sam
        batch = pix_feat.size(0)
        sparse, dense = prompts
        if image_pe is None:
            image_pe = sam.sam_prompt_encoder.get_dense_pe()
        low_res, ious, output_tokens, obj_score = sam.sam_mask_decoder(
            image_embeddings=pix_feat,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=high_res,
        )
        low_res = low_res.float()
        appearing = obj_score > 0
        gated = torch.where(appearing[:, None, None], low_res, NO_OBJ_SCORE)
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(batch, device=pix_feat.device)
        memory_mask = gated[rows, best].unsqueeze(1)
        token = output_tokens[rows, best] if output_tokens.size(1) > 1 else output_tokens[:, 0]
        obj_ptr = sam.obj_ptr_proj(token)
        if sam.pred_obj_scores:
            weight = obj_score.sigmoid() if sam.soft_no_obj_ptr else appearing.to(obj_ptr.dtype)
            if sam.fixed_no_obj_ptr:
                obj_ptr = weight * obj_ptr
            obj_ptr = obj_ptr + (1 - weight) * sam.no_obj_ptr
        logits = gated if self.gate_logits_by_object_score else low_res
        return FrameHeads(logits, memory_mask, obj_ptr, obj_score)

    # ------------------------------------------------------------------ engine path
    def forward(
        self,
        frames: torch.Tensor,
        skip_last_memory: bool = True,
        return_features: bool = False,
        past: Sequence[InstantMemory] | None = None,
    ) -> dict[str, torch.Tensor]:
        """``frames [B, M, 3, S, S]`` (M modalities in frame order) → ``{"logits": [B, C, S, S]}``.

        ``return_features`` adds ``"features"``: the modality-mean stride-4 feature (``conv_s0`` output,
        ``[B, 32, S/4, S/4]``) that SPMM builds class prototypes from.
        ``past`` (a list, possibly empty, newest instant first) runs the temporal mode (module docstring): every
        frame also attends to these memories, the last frame's memory is always encoded and ``"memory"`` (an
        :class:`InstantMemory`) is added to the output for the next instant. ``None``: memory across modalities only.
        """
        if past is not None and len(past) > self.max_temporal_memory:
            raise ValueError(f"{len(past)} past instants; SAM 2's temporal slots hold {self.max_temporal_memory}")
        batch, num_frames, _, size, _ = frames.shape
        images = frames.transpose(0, 1).reshape(num_frames * batch, *frames.shape[2:])  # frame-major
        if images.device.type == "cpu" and not torch.is_grad_enabled() and num_frames > 1:
            feats, pos, sizes = self._encode_in_chunks(images, batch)
        else:
            feats, pos, sizes = self.encode_images(images)
        prompts = self._no_prompt_embeddings(batch, frames.device)  # same for every frame: once per forward
        image_pe = self.sam.sam_prompt_encoder.get_dense_pe()
        memories: list[dict[str, torch.Tensor]] = []
        logit_sum = None
        for k in range(num_frames):
            frame = slice(k * batch, (k + 1) * batch)
            cur_feats = [f[:, frame] for f in feats]
            cur_pos = [p[:, frame] for p in pos]
            pix_feat = self.condition_on_memory(
                cur_feats[-1], cur_pos[-1], sizes[-1], memories, self.pointer_frames(num_frames), past
            )
            high_res = [x.permute(1, 2, 0).reshape(batch, x.size(2), *s) for x, s in zip(cur_feats[:-1], sizes[:-1])]
            heads = self.semantic_heads(pix_feat, high_res, prompts, image_pe)
            logit_sum = heads.class_logits if logit_sum is None else logit_sum + heads.class_logits
            if k < num_frames - 1 or not skip_last_memory or past is not None:
                mask_full = F.interpolate(
                    heads.memory_mask_logits, size=(size, size), mode="bilinear", align_corners=False
                )
                maskmem, maskmem_pos = self.sam._encode_new_memory(
                    current_vision_feats=cur_feats,
                    feat_sizes=sizes,
                    pred_masks_high_res=mask_full,
                    object_score_logits=heads.object_score_logits,
                    is_mask_from_pts=False,
                )
                memories.append({"maskmem_features": maskmem, "maskmem_pos_enc": maskmem_pos, "obj_ptr": heads.obj_ptr})
        logits = F.interpolate(logit_sum / num_frames, size=(size, size), mode="bilinear", align_corners=False)
        out = {"logits": logits}
        if past is not None:  # the last frame's memory: what this instant leaves for the next ones
            last = memories[-1]
            out["memory"] = InstantMemory(last["maskmem_features"], last["maskmem_pos_enc"][-1], last["obj_ptr"])
        if return_features:
            level0 = feats[0].permute(1, 2, 0)  # [M*B, 32, HW/16] frame-major
            h0, w0 = sizes[0]
            out["features"] = level0.reshape(num_frames, batch, -1, h0, w0).mean(dim=0)
        return out

    # ------------------------------------------------------------------ naive reference path
    @torch.no_grad()
    def forward_reference(self, frames: torch.Tensor) -> torch.Tensor:
        """MemorySAM's own loop: per-modality ``forward_image``, SAM 2 ``_track_step`` per frame, every
        frame's memory encoded, full-resolution logits averaged. Same weights, slower; for benchmarks
        and for testing that :meth:`forward` is faithful."""
        sam = self.sam
        num_frames = frames.shape[1]
        per_frame = [sam._prepare_backbone_features(sam.forward_image(frames[:, k]))[1:] for k in range(num_frames)]
        output_dict: dict[str, dict] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        total = None
        for k, (feats, pos, sizes) in enumerate(per_frame):
            current_out, sam_outputs, _, _ = sam._track_step(
                frame_idx=k,
                is_init_cond_frame=k == 0,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=sizes,
                point_inputs=None,
                mask_inputs=None,
                output_dict=output_dict,
                num_frames=self.pointer_frames(num_frames),
                track_in_reverse=False,
                prev_sam_mask_logits=None,
            )
            _, high_res_multimasks, _, _, high_res_masks, obj_ptr, object_score_logits = sam_outputs
            current_out["obj_ptr"] = obj_ptr
            sam._encode_memory_in_output(feats, sizes, None, True, high_res_masks, object_score_logits, current_out)
            output_dict["cond_frame_outputs"][k] = current_out
            total = high_res_multimasks if total is None else total + high_res_multimasks
        return total / num_frames
