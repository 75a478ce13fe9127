from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
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

class AudioFormat(_message.Message):
    __slots__ = ("encoding", "sample_rate_hz")
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    encoding: AudioEncoding
    sample_rate_hz: int
    def __init__(self, encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ...) -> None: ...
