"""Runs an encoder off the asyncio event loop.

One worker thread per encoder: torch already spreads one forward pass over the
configured intra-op threads, so more workers would only fight for the cores.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from authsvc.voice.encoder import SpeakerEncoder


class EmbeddingRunner:
    def __init__(self, encoder: SpeakerEncoder) -> None:
        self.encoder = encoder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"embed-{encoder.encoder_id}")

    async def embed(self, wav: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        out = await loop.run_in_executor(self._pool, self.encoder.embed_batch, [wav])
        return out[0]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
