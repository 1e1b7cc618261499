from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BundleChunk(_message.Message):
    __slots__ = ("upload_id", "offset", "total_size", "sha256", "data", "activate")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    ACTIVATE_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    offset: int
    total_size: int
    sha256: str
    data: bytes
    activate: bool
    def __init__(self, upload_id: _Optional[str] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., data: _Optional[bytes] = ..., activate: _Optional[bool] = ...) -> None: ...

class PushResult(_message.Message):
    __slots__ = ("bundle_id", "name", "version", "variant", "activated", "received")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATED_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    name: str
    version: str
    variant: str
    activated: bool
    received: int
    def __init__(self, bundle_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., activated: _Optional[bool] = ..., received: _Optional[int] = ...) -> None: ...

class GetUploadRequest(_message.Message):
    __slots__ = ("upload_id",)
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    def __init__(self, upload_id: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("upload_id", "offset", "complete")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    offset: int
    complete: bool
    def __init__(self, upload_id: _Optional[str] = ..., offset: _Optional[int] = ..., complete: _Optional[bool] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("bundle_id",)
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    def __init__(self, bundle_id: _Optional[str] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ActiveModel(_message.Message):
    __slots__ = ("bundle_id", "name", "version", "variant", "previous_bundle_id")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    name: str
    version: str
    variant: str
    previous_bundle_id: str
    def __init__(self, bundle_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., previous_bundle_id: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StoredModel(_message.Message):
    __slots__ = ("bundle_id", "name", "version", "variant", "active", "received", "size")
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    bundle_id: str
    name: str
    version: str
    variant: str
    active: bool
    received: float
    size: int
    def __init__(self, bundle_id: _Optional[str] = ..., name: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., active: _Optional[bool] = ..., received: _Optional[float] = ..., size: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[StoredModel]
    def __init__(self, models: _Optional[_Iterable[_Union[StoredModel, _Mapping]]] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("agent_version", "active", "uptime_s", "requests", "errors", "free_disk_bytes", "journal_last_seq", "journal_acked_seq", "journal_records", "providers", "workers", "batches", "batched_items", "journal_id", "timed_requests", "queue_us", "input_us", "infer_us", "output_us", "rest_port")
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    FREE_DISK_BYTES_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_RECORDS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BATCHED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_US_FIELD_NUMBER: _ClassVar[int]
    INPUT_US_FIELD_NUMBER: _ClassVar[int]
    INFER_US_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_US_FIELD_NUMBER: _ClassVar[int]
    REST_PORT_FIELD_NUMBER: _ClassVar[int]
    agent_version: str
    active: ActiveModel
    uptime_s: float
    requests: int
    errors: int
    free_disk_bytes: int
    journal_last_seq: int
    journal_acked_seq: int
    journal_records: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    workers: int
    batches: int
    batched_items: int
    journal_id: str
    timed_requests: int
    queue_us: int
    input_us: int
    infer_us: int
    output_us: int
    rest_port: int
    def __init__(self, agent_version: _Optional[str] = ..., active: _Optional[_Union[ActiveModel, _Mapping]] = ..., uptime_s: _Optional[float] = ..., requests: _Optional[int] = ..., errors: _Optional[int] = ..., free_disk_bytes: _Optional[int] = ..., journal_last_seq: _Optional[int] = ..., journal_acked_seq: _Optional[int] = ..., journal_records: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ..., workers: _Optional[int] = ..., batches: _Optional[int] = ..., batched_items: _Optional[int] = ..., journal_id: _Optional[str] = ..., timed_requests: _Optional[int] = ..., queue_us: _Optional[int] = ..., input_us: _Optional[int] = ..., infer_us: _Optional[int] = ..., output_us: _Optional[int] = ..., rest_port: _Optional[int] = ...) -> None: ...

class StreamScoringRequest(_message.Message):
    __slots__ = ("from_seq", "follow", "max_records", "journal_id")
    FROM_SEQ_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_RECORDS_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_ID_FIELD_NUMBER: _ClassVar[int]
    from_seq: int
    follow: bool
    max_records: int
    journal_id: str
    def __init__(self, from_seq: _Optional[int] = ..., follow: _Optional[bool] = ..., max_records: _Optional[int] = ..., journal_id: _Optional[str] = ...) -> None: ...

class ScoringRecord(_message.Message):
    __slots__ = ("seq", "time", "model", "version", "variant", "input_summary_json", "label", "confidence", "probabilities_json", "latency_ms", "raw_input", "raw_kind", "bundle_id")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    INPUT_SUMMARY_JSON_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_JSON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_FIELD_NUMBER: _ClassVar[int]
    RAW_KIND_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    model: str
    version: str
    variant: str
    input_summary_json: str
    label: str
    confidence: float
    probabilities_json: str
    latency_ms: float
    raw_input: bytes
    raw_kind: str
    bundle_id: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., model: _Optional[str] = ..., version: _Optional[str] = ..., variant: _Optional[str] = ..., input_summary_json: _Optional[str] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ..., probabilities_json: _Optional[str] = ..., latency_ms: _Optional[float] = ..., raw_input: _Optional[bytes] = ..., raw_kind: _Optional[str] = ..., bundle_id: _Optional[str] = ...) -> None: ...

class AckScoringRequest(_message.Message):
    __slots__ = ("up_to_seq", "journal_id")
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    JOURNAL_ID_FIELD_NUMBER: _ClassVar[int]
    up_to_seq: int
    journal_id: str
    def __init__(self, up_to_seq: _Optional[int] = ..., journal_id: _Optional[str] = ...) -> None: ...

class AckScoringResponse(_message.Message):
    __slots__ = ("acked_seq", "pruned")
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    acked_seq: int
    pruned: int
    def __init__(self, acked_seq: _Optional[int] = ..., pruned: _Optional[int] = ...) -> None: ...
