from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM16_LE: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_MULAW: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_ALAW: _ClassVar[AudioEncoding]

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_VOICE: _ClassVar[Channel]
    CHANNEL_CHAT: _ClassVar[Channel]
    CHANNEL_WEB: _ClassVar[Channel]
    CHANNEL_APP: _ClassVar[Channel]

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_VOICE: _ClassVar[Modality]
    MODALITY_KEYSTROKE_FIXED: _ClassVar[Modality]
    MODALITY_KEYSTROKE_FREE: _ClassVar[Modality]

class QualityIssue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_ISSUE_UNSPECIFIED: _ClassVar[QualityIssue]
    QUALITY_ISSUE_TOO_SHORT: _ClassVar[QualityIssue]
    QUALITY_ISSUE_CLIPPED: _ClassVar[QualityIssue]
    QUALITY_ISSUE_SILENT: _ClassVar[QualityIssue]

class KeystrokeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEYSTROKE_KIND_UNSPECIFIED: _ClassVar[KeystrokeKind]
    KEYSTROKE_KIND_FIXED_TEXT: _ClassVar[KeystrokeKind]
    KEYSTROKE_KIND_FREE_TEXT: _ClassVar[KeystrokeKind]
    KEYSTROKE_KIND_DTMF: _ClassVar[KeystrokeKind]

class AuthMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUTH_METHOD_UNSPECIFIED: _ClassVar[AuthMethod]
    AUTH_METHOD_VOICE: _ClassVar[AuthMethod]
    AUTH_METHOD_TYPING: _ClassVar[AuthMethod]
    AUTH_METHOD_TOTP: _ClassVar[AuthMethod]
    AUTH_METHOD_ONE_TIME_CODE: _ClassVar[AuthMethod]

class SecondFactor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECOND_FACTOR_UNSPECIFIED: _ClassVar[SecondFactor]
    SECOND_FACTOR_TOTP: _ClassVar[SecondFactor]
    SECOND_FACTOR_ONE_TIME_CODE: _ClassVar[SecondFactor]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_PCM16_LE: AudioEncoding
AUDIO_ENCODING_MULAW: AudioEncoding
AUDIO_ENCODING_ALAW: AudioEncoding
CHANNEL_UNSPECIFIED: Channel
CHANNEL_VOICE: Channel
CHANNEL_CHAT: Channel
CHANNEL_WEB: Channel
CHANNEL_APP: Channel
MODALITY_UNSPECIFIED: Modality
MODALITY_VOICE: Modality
MODALITY_KEYSTROKE_FIXED: Modality
MODALITY_KEYSTROKE_FREE: Modality
QUALITY_ISSUE_UNSPECIFIED: QualityIssue
QUALITY_ISSUE_TOO_SHORT: QualityIssue
QUALITY_ISSUE_CLIPPED: QualityIssue
QUALITY_ISSUE_SILENT: QualityIssue
KEYSTROKE_KIND_UNSPECIFIED: KeystrokeKind
KEYSTROKE_KIND_FIXED_TEXT: KeystrokeKind
KEYSTROKE_KIND_FREE_TEXT: KeystrokeKind
KEYSTROKE_KIND_DTMF: KeystrokeKind
AUTH_METHOD_UNSPECIFIED: AuthMethod
AUTH_METHOD_VOICE: AuthMethod
AUTH_METHOD_TYPING: AuthMethod
AUTH_METHOD_TOTP: AuthMethod
AUTH_METHOD_ONE_TIME_CODE: AuthMethod
SECOND_FACTOR_UNSPECIFIED: SecondFactor
SECOND_FACTOR_TOTP: SecondFactor
SECOND_FACTOR_ONE_TIME_CODE: SecondFactor

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hz: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...

class KeyEvent(_message.Message):
    __slots__ = ("key", "down_s", "up_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DOWN_S_FIELD_NUMBER: _ClassVar[int]
    UP_S_FIELD_NUMBER: _ClassVar[int]
    key: str
    down_s: float
    up_s: float
    def __init__(self, key: _Optional[str] = ..., down_s: _Optional[float] = ..., up_s: _Optional[float] = ...) -> None: ...

class KeystrokeSample(_message.Message):
    __slots__ = ("kind", "profile", "text", "events")
    KIND_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    kind: KeystrokeKind
    profile: str
    text: str
    events: _containers.RepeatedCompositeFieldContainer[KeyEvent]
    def __init__(self, kind: _Optional[_Union[KeystrokeKind, str]] = ..., profile: _Optional[str] = ..., text: _Optional[str] = ..., events: _Optional[_Iterable[_Union[KeyEvent, _Mapping]]] = ...) -> None: ...
