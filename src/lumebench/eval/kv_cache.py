"""The fast engine's KV-cache handling: left-padded prompts, a ``DynamicCache`` whose layers append in
place, and the edits of a running batch's cache (joining rows, dropping unused columns)."""

from __future__ import annotations

import functools


def left_padded(prompts: list[list[int]], pad_id: int, device):
    import torch

    n, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


@functools.cache
def slack_layer_class():
    """``DynamicLayer`` that appends into spare room instead of concatenating.

    ``DynamicLayer.update`` does ``torch.cat([keys, new])``: every decoding step copies the whole
    cache of every layer, quadratic in the output length. With a batch of 64 rows of ~600 positions
    that copy is most of a small model's forward on a CPU (measured: 9 of 22 s of the tiny target's
    generation). This layer keeps keys and values in buffers with room for the next tokens and returns
    views of their used part; the engine's own cache edits (row selection, joining, compaction) assign
    new tensors to ``keys``/``values``, which the next update adopts into a fresh buffer. The values
    attention sees are the same tensors, so the outputs are unchanged.
    """
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        _kbuf = _vbuf = None

        def _owns(self) -> bool:
            kb, k, v = self._kbuf, self.keys, self.values
            return (kb is not None and k.data_ptr() == kb.data_ptr() and k.shape[0] == kb.shape[0]
                    and k.stride() == kb.stride() and v.data_ptr() == self._vbuf.data_ptr()
                    and v.stride() == self._vbuf.stride())

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n, q = self.get_seq_length(), key_states.shape[-2]
            if not (n and self._owns()) or n + q > self._kbuf.shape[-2]:
                b, h, _, d = key_states.shape
                room = n + q + max(SLACK_MIN, (n + q) // 2)
                kb = key_states.new_empty(b, h, room, d)
                vb = value_states.new_empty(b, value_states.shape[1], room, value_states.shape[3])
                if n:
                    kb[:, :, :n] = self.keys
                    vb[:, :, :n] = self.values
                self._kbuf, self._vbuf = kb, vb
            self._kbuf[:, :, n:n + q] = key_states
            self._vbuf[:, :, n:n + q] = value_states
            self.keys, self.values = self._kbuf[:, :, :n + q], self._vbuf[:, :, :n + q]
            return self.keys, self.values

    return SlackLayer


SLACK_MIN = 64  # cache positions of spare room at least (then half the used length)


def new_cache():
    """A ``DynamicCache`` whose layers append in place (see :func:`slack_layer_class`)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.layer_class_to_replicate = slack_layer_class()
    return cache


def reset_to(cache, n: int) -> None:
    """Keep the first ``n`` positions of every layer (views: a :func:`slack_layer_class` layer then
    writes the next tokens over the dropped ones, in place)."""
    for layer in _layers(cache):
        layer.keys = layer.keys[:, :, :n]
        layer.values = layer.values[:, :, :n]


def plain_dynamic(cache) -> bool:
    """Every layer is a plain growing layer (no sliding window, no static size): the engine may edit it."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) in (DynamicLayer, slack_layer_class()) for layer in cache.layers)


def _layers(cache):
    return cache.layers


def _cache_pad_left(cache, mask, extra: int):
    import torch

    for layer in _layers(cache):
        for name in ("keys", "values"):
            t = getattr(layer, name)
            pad = t.new_zeros(t.shape[0], t.shape[1], extra, t.shape[3])
            setattr(layer, name, torch.cat([pad, t], 2))
    return torch.cat([mask.new_zeros(mask.shape[0], extra), mask], 1)


def cache_join(cache, mask, new_cache, new_mask):
    """The batch of ``cache`` followed by the rows of ``new_cache`` (left-padded to one width)."""
    import torch

    w, nw = mask.shape[1], new_mask.shape[1]
    if nw < w:
        new_mask = _cache_pad_left(new_cache, new_mask, w - nw)
    elif w < nw:
        mask = _cache_pad_left(cache, mask, nw - w)
    for layer, new in zip(_layers(cache), _layers(new_cache)):
        layer.keys = torch.cat([layer.keys, new.keys], 0)
        layer.values = torch.cat([layer.values, new.values], 0)
    return torch.cat([mask, new_mask], 0)


def cache_compact(cache, mask, force: bool = False):
    """Drop cache columns that no row uses: left padding (a slice), and when rejected drafts have
    left holes worth it, right-align every row's real columns (a gather). Attention ignores masked
    columns, and each key already carries its rotary position, so the model sees the same thing."""
    import torch

    counts = mask.sum(1)
    width, need = mask.shape[1], int(counts.max())
    if width == need:
        return mask
    lead = int((mask.sum(0) == 0).long().cumprod(0).sum())  # all-zero columns on the left
    if not force and width - lead - need < max(32, need // 2):
        if lead:
            for layer in _layers(cache):
                layer.keys = layer.keys[:, :, lead:, :]
                layer.values = layer.values[:, :, lead:, :]
            mask = mask[:, lead:]
        return mask
    order = torch.argsort(mask * width + torch.arange(width, device=mask.device), dim=1)[:, width - need:]
    for layer in _layers(cache):
        b, h, _, d = layer.keys.shape
        index = order[:, None, :, None].expand(b, h, need, d)
        layer.keys = layer.keys.gather(2, index)
        layer.values = layer.values.gather(2, index)
    return mask.gather(1, order)

