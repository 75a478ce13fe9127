"""What sessions and enrollment call to embed audio: `await runner.embed(wav)`.

Since the batching core (issue 5) the runner is a thin front over a
`MicroBatcher`: every live session's request joins a shared batch, computed
in the batcher's worker thread, off the event loop. Callers are unaware of it:
one waveform in, its (D,) embedding out, the same as the encoder gives alone.
"""

from __future__ import annotations

import numpy as np

from authsvc.metrics import Metrics
from authsvc.voice.batcher import BatchConfig, MicroBatcher
from authsvc.voice.encoder import SpeakerEncoder


class EmbeddingRunner:
    def __init__(
        self,
        encoder: SpeakerEncoder,
        config: BatchConfig | None = None,
        metrics: Metrics | None = None,
        *,
        warm_up: bool = True,
    ) -> None:
        self.encoder = encoder
        self.batcher = MicroBatcher(encoder, config, metrics, warm_up=warm_up)

    async def embed(self, wav: np.ndarray, deadline: float | None = None) -> np.ndarray:
        """`wav`'s embedding; `deadline` (time.monotonic()) drops it unqueued once passed.

        Raises `Overloaded` when the queue is full, `TimeoutError` past the deadline.
        """
        return await self.batcher.embed(wav, deadline=deadline)

    def close(self) -> None:
        self.batcher.close()
