from authsvc.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Watchlist(_message.Message):
    __slots__ = ("tenant", "name", "description", "created_unix_ms", "fraudsters")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FRAUDSTERS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    description: str
    created_unix_ms: int
    fraudsters: int
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., created_unix_ms: _Optional[int] = ..., fraudsters: _Optional[int] = ...) -> None: ...

class CreateWatchlistRequest(_message.Message):
    __slots__ = ("tenant", "name", "description")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    description: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ListWatchlistsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListWatchlistsResponse(_message.Message):
    __slots__ = ("watchlists", "false_match_rate_per_comparison", "listed_voices")
    WATCHLISTS_FIELD_NUMBER: _ClassVar[int]
    FALSE_MATCH_RATE_PER_COMPARISON_FIELD_NUMBER: _ClassVar[int]
    LISTED_VOICES_FIELD_NUMBER: _ClassVar[int]
    watchlists: _containers.RepeatedCompositeFieldContainer[Watchlist]
    false_match_rate_per_comparison: float
    listed_voices: int
    def __init__(self, watchlists: _Optional[_Iterable[_Union[Watchlist, _Mapping]]] = ..., false_match_rate_per_comparison: _Optional[float] = ..., listed_voices: _Optional[int] = ...) -> None: ...

class DeleteWatchlistRequest(_message.Message):
    __slots__ = ("tenant", "name")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    name: str
    def __init__(self, tenant: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteWatchlistResponse(_message.Message):
    __slots__ = ("fraudsters_removed",)
    FRAUDSTERS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    fraudsters_removed: int
    def __init__(self, fraudsters_removed: _Optional[int] = ...) -> None: ...

class AddFraudsterRequest(_message.Message):
    __slots__ = ("tenant", "watchlist", "fraudster_id", "format", "audio", "from_session_id", "session_customer_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    FRAUDSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    FROM_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    watchlist: str
    fraudster_id: str
    format: _common_pb2.AudioFormat
    audio: _containers.RepeatedScalarFieldContainer[bytes]
    from_session_id: str
    session_customer_id: str
    def __init__(self, tenant: _Optional[str] = ..., watchlist: _Optional[str] = ..., fraudster_id: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.AudioFormat, _Mapping]] = ..., audio: _Optional[_Iterable[bytes]] = ..., from_session_id: _Optional[str] = ..., session_customer_id: _Optional[str] = ...) -> None: ...

class AddFraudsterResponse(_message.Message):
    __slots__ = ("added", "samples", "net_speech_seconds")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    NET_SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    added: bool
    samples: int
    net_speech_seconds: float
    def __init__(self, added: _Optional[bool] = ..., samples: _Optional[int] = ..., net_speech_seconds: _Optional[float] = ...) -> None: ...

class RemoveFraudsterRequest(_message.Message):
    __slots__ = ("tenant", "watchlist", "fraudster_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    FRAUDSTER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    watchlist: str
    fraudster_id: str
    def __init__(self, tenant: _Optional[str] = ..., watchlist: _Optional[str] = ..., fraudster_id: _Optional[str] = ...) -> None: ...

class RemoveFraudsterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFraudstersRequest(_message.Message):
    __slots__ = ("tenant", "watchlist")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    WATCHLIST_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    watchlist: str
    def __init__(self, tenant: _Optional[str] = ..., watchlist: _Optional[str] = ...) -> None: ...

class Fraudster(_message.Message):
    __slots__ = ("fraudster_id", "samples", "created_unix_ms")
    FRAUDSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CREATED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    fraudster_id: str
    samples: int
    created_unix_ms: int
    def __init__(self, fraudster_id: _Optional[str] = ..., samples: _Optional[int] = ..., created_unix_ms: _Optional[int] = ...) -> None: ...

class ListFraudstersResponse(_message.Message):
    __slots__ = ("fraudsters",)
    FRAUDSTERS_FIELD_NUMBER: _ClassVar[int]
    fraudsters: _containers.RepeatedCompositeFieldContainer[Fraudster]
    def __init__(self, fraudsters: _Optional[_Iterable[_Union[Fraudster, _Mapping]]] = ...) -> None: ...
