import datetime

from eventline.v1 import alerts_pb2 as _alerts_pb2
from eventline.v1 import lifecycle_pb2 as _lifecycle_pb2
from eventline.v1 import search_pb2 as _search_pb2
from eventline.v1 import streams_pb2 as _streams_pb2
from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Scope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCOPE_UNSPECIFIED: _ClassVar[Scope]
    SCOPE_INGEST: _ClassVar[Scope]
    SCOPE_QUERY: _ClassVar[Scope]
    SCOPE_ADMIN: _ClassVar[Scope]

class AuditAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_ACTION_UNSPECIFIED: _ClassVar[AuditAction]
    AUDIT_ACTION_TENANT_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_KEY_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_KEY_REVOKED: _ClassVar[AuditAction]
    AUDIT_ACTION_EXPIRED_KEY_USED: _ClassVar[AuditAction]
    AUDIT_ACTION_USER_DELETION_REQUESTED: _ClassVar[AuditAction]
    AUDIT_ACTION_USER_DELETION_FINISHED: _ClassVar[AuditAction]
    AUDIT_ACTION_RETENTION_SET: _ClassVar[AuditAction]
    AUDIT_ACTION_SCHEMA_SET: _ClassVar[AuditAction]
    AUDIT_ACTION_SCHEMA_DELETED: _ClassVar[AuditAction]
    AUDIT_ACTION_QUARANTINE_REPLAYED: _ClassVar[AuditAction]
    AUDIT_ACTION_QUARANTINE_PURGED: _ClassVar[AuditAction]
    AUDIT_ACTION_SEARCH_ENABLED: _ClassVar[AuditAction]
    AUDIT_ACTION_SEARCH_DISABLED: _ClassVar[AuditAction]
    AUDIT_ACTION_SUBSCRIPTION_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_SUBSCRIPTION_DELETED: _ClassVar[AuditAction]
    AUDIT_ACTION_SUBSCRIPTION_RESUMED: _ClassVar[AuditAction]
    AUDIT_ACTION_ALERT_RULE_CREATED: _ClassVar[AuditAction]
    AUDIT_ACTION_ALERT_RULE_DELETED: _ClassVar[AuditAction]
SCOPE_UNSPECIFIED: Scope
SCOPE_INGEST: Scope
SCOPE_QUERY: Scope
SCOPE_ADMIN: Scope
AUDIT_ACTION_UNSPECIFIED: AuditAction
AUDIT_ACTION_TENANT_CREATED: AuditAction
AUDIT_ACTION_KEY_CREATED: AuditAction
AUDIT_ACTION_KEY_REVOKED: AuditAction
AUDIT_ACTION_EXPIRED_KEY_USED: AuditAction
AUDIT_ACTION_USER_DELETION_REQUESTED: AuditAction
AUDIT_ACTION_USER_DELETION_FINISHED: AuditAction
AUDIT_ACTION_RETENTION_SET: AuditAction
AUDIT_ACTION_SCHEMA_SET: AuditAction
AUDIT_ACTION_SCHEMA_DELETED: AuditAction
AUDIT_ACTION_QUARANTINE_REPLAYED: AuditAction
AUDIT_ACTION_QUARANTINE_PURGED: AuditAction
AUDIT_ACTION_SEARCH_ENABLED: AuditAction
AUDIT_ACTION_SEARCH_DISABLED: AuditAction
AUDIT_ACTION_SUBSCRIPTION_CREATED: AuditAction
AUDIT_ACTION_SUBSCRIPTION_DELETED: AuditAction
AUDIT_ACTION_SUBSCRIPTION_RESUMED: AuditAction
AUDIT_ACTION_ALERT_RULE_CREATED: AuditAction
AUDIT_ACTION_ALERT_RULE_DELETED: AuditAction

class Tenant(_message.Message):
    __slots__ = ("tenant_id", "name", "create_time")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("key_id", "tenant_id", "scopes", "create_time", "revoke_time", "expire_time", "events_per_second", "burst")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    tenant_id: str
    scopes: _containers.RepeatedScalarFieldContainer[Scope]
    create_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    events_per_second: int
    burst: int
    def __init__(self, key_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[Scope, str]]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_per_second: _Optional[int] = ..., burst: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("tenant_id", "scopes", "expire_time", "events_per_second", "burst")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BURST_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    scopes: _containers.RepeatedScalarFieldContainer[Scope]
    expire_time: _timestamp_pb2.Timestamp
    events_per_second: int
    burst: int
    def __init__(self, tenant_id: _Optional[str] = ..., scopes: _Optional[_Iterable[_Union[Scope, str]]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_per_second: _Optional[int] = ..., burst: _Optional[int] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys",)
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("audit_id", "tenant_id", "actor", "action", "target", "event_time", "details")
    class DetailsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    tenant_id: str
    actor: str
    action: AuditAction
    target: str
    event_time: _timestamp_pb2.Timestamp
    details: _containers.ScalarMap[str, str]
    def __init__(self, audit_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., actor: _Optional[str] = ..., action: _Optional[_Union[AuditAction, str]] = ..., target: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("audit_events", "next_page_token")
    AUDIT_EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    audit_events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, audit_events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
