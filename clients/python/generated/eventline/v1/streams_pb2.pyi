import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscriptionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_STATE_UNSPECIFIED: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_ACTIVE: _ClassVar[SubscriptionState]
    SUBSCRIPTION_STATE_PAUSED: _ClassVar[SubscriptionState]
SUBSCRIPTION_STATE_UNSPECIFIED: SubscriptionState
SUBSCRIPTION_STATE_ACTIVE: SubscriptionState
SUBSCRIPTION_STATE_PAUSED: SubscriptionState

class WebhookSink(_message.Message):
    __slots__ = ("url",)
    URL_FIELD_NUMBER: _ClassVar[int]
    url: str
    def __init__(self, url: _Optional[str] = ...) -> None: ...

class NatsSink(_message.Message):
    __slots__ = ("subject",)
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    def __init__(self, subject: _Optional[str] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("subscription_id", "tenant_id", "webhook", "nats", "event_types", "state", "last_error", "events_delivered", "create_time")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    NATS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    tenant_id: str
    webhook: WebhookSink
    nats: NatsSink
    event_types: _containers.RepeatedScalarFieldContainer[str]
    state: SubscriptionState
    last_error: str
    events_delivered: int
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, subscription_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., webhook: _Optional[_Union[WebhookSink, _Mapping]] = ..., nats: _Optional[_Union[NatsSink, _Mapping]] = ..., event_types: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[SubscriptionState, str]] = ..., last_error: _Optional[str] = ..., events_delivered: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSubscriptionRequest(_message.Message):
    __slots__ = ("tenant_id", "webhook", "nats", "event_types", "replay_history")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_FIELD_NUMBER: _ClassVar[int]
    NATS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    REPLAY_HISTORY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    webhook: WebhookSink
    nats: NatsSink
    event_types: _containers.RepeatedScalarFieldContainer[str]
    replay_history: bool
    def __init__(self, tenant_id: _Optional[str] = ..., webhook: _Optional[_Union[WebhookSink, _Mapping]] = ..., nats: _Optional[_Union[NatsSink, _Mapping]] = ..., event_types: _Optional[_Iterable[str]] = ..., replay_history: _Optional[bool] = ...) -> None: ...

class CreateSubscriptionResponse(_message.Message):
    __slots__ = ("subscription", "webhook_secret")
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    webhook_secret: str
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ..., webhook_secret: _Optional[str] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions",)
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ...) -> None: ...

class DeleteSubscriptionRequest(_message.Message):
    __slots__ = ("tenant_id", "subscription_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subscription_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class DeleteSubscriptionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeSubscriptionRequest(_message.Message):
    __slots__ = ("tenant_id", "subscription_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    subscription_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., subscription_id: _Optional[str] = ...) -> None: ...

class ResumeSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...
