import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]

class Comparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARISON_UNSPECIFIED: _ClassVar[Comparison]
    COMPARISON_GREATER_THAN: _ClassVar[Comparison]
    COMPARISON_GREATER_THAN_OR_EQUAL: _ClassVar[Comparison]
    COMPARISON_LESS_THAN: _ClassVar[Comparison]
    COMPARISON_LESS_THAN_OR_EQUAL: _ClassVar[Comparison]

class AlertDeliveryOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_DELIVERY_OUTCOME_UNSPECIFIED: _ClassVar[AlertDeliveryOutcome]
    ALERT_DELIVERY_OUTCOME_PENDING: _ClassVar[AlertDeliveryOutcome]
    ALERT_DELIVERY_OUTCOME_DELIVERED: _ClassVar[AlertDeliveryOutcome]
    ALERT_DELIVERY_OUTCOME_FAILED: _ClassVar[AlertDeliveryOutcome]
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_RESOLVED: AlertState
ALERT_STATE_FIRING: AlertState
COMPARISON_UNSPECIFIED: Comparison
COMPARISON_GREATER_THAN: Comparison
COMPARISON_GREATER_THAN_OR_EQUAL: Comparison
COMPARISON_LESS_THAN: Comparison
COMPARISON_LESS_THAN_OR_EQUAL: Comparison
ALERT_DELIVERY_OUTCOME_UNSPECIFIED: AlertDeliveryOutcome
ALERT_DELIVERY_OUTCOME_PENDING: AlertDeliveryOutcome
ALERT_DELIVERY_OUTCOME_DELIVERED: AlertDeliveryOutcome
ALERT_DELIVERY_OUTCOME_FAILED: AlertDeliveryOutcome

class ThresholdCondition(_message.Message):
    __slots__ = ("event_type", "comparison", "threshold")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    comparison: Comparison
    threshold: float
    def __init__(self, event_type: _Optional[str] = ..., comparison: _Optional[_Union[Comparison, str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class RatioCondition(_message.Message):
    __slots__ = ("numerator_event_type", "denominator_event_type", "comparison", "threshold", "min_denominator")
    NUMERATOR_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    DENOMINATOR_EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MIN_DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    numerator_event_type: str
    denominator_event_type: str
    comparison: Comparison
    threshold: float
    min_denominator: int
    def __init__(self, numerator_event_type: _Optional[str] = ..., denominator_event_type: _Optional[str] = ..., comparison: _Optional[_Union[Comparison, str]] = ..., threshold: _Optional[float] = ..., min_denominator: _Optional[int] = ...) -> None: ...

class SpikeCondition(_message.Message):
    __slots__ = ("event_type", "baseline_windows", "sensitivity", "min_count")
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_WINDOWS_FIELD_NUMBER: _ClassVar[int]
    SENSITIVITY_FIELD_NUMBER: _ClassVar[int]
    MIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    event_type: str
    baseline_windows: int
    sensitivity: float
    min_count: int
    def __init__(self, event_type: _Optional[str] = ..., baseline_windows: _Optional[int] = ..., sensitivity: _Optional[float] = ..., min_count: _Optional[int] = ...) -> None: ...

class AlertRule(_message.Message):
    __slots__ = ("rule_id", "tenant_id", "name", "window_seconds", "threshold", "ratio", "spike", "webhook_url", "create_time")
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RATIO_FIELD_NUMBER: _ClassVar[int]
    SPIKE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    tenant_id: str
    name: str
    window_seconds: int
    threshold: ThresholdCondition
    ratio: RatioCondition
    spike: SpikeCondition
    webhook_url: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, rule_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., window_seconds: _Optional[int] = ..., threshold: _Optional[_Union[ThresholdCondition, _Mapping]] = ..., ratio: _Optional[_Union[RatioCondition, _Mapping]] = ..., spike: _Optional[_Union[SpikeCondition, _Mapping]] = ..., webhook_url: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("rule", "state", "state_since", "last_value", "last_evaluation_time")
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    LAST_VALUE_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_TIME_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    state: AlertState
    state_since: _timestamp_pb2.Timestamp
    last_value: float
    last_evaluation_time: _timestamp_pb2.Timestamp
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ..., state: _Optional[_Union[AlertState, str]] = ..., state_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_value: _Optional[float] = ..., last_evaluation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AlertDelivery(_message.Message):
    __slots__ = ("delivery_id", "rule_id", "transition", "value", "outcome", "attempts", "last_http_status", "last_error", "create_time", "finish_time")
    DELIVERY_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    delivery_id: str
    rule_id: str
    transition: AlertState
    value: float
    outcome: AlertDeliveryOutcome
    attempts: int
    last_http_status: int
    last_error: str
    create_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, delivery_id: _Optional[str] = ..., rule_id: _Optional[str] = ..., transition: _Optional[_Union[AlertState, str]] = ..., value: _Optional[float] = ..., outcome: _Optional[_Union[AlertDeliveryOutcome, str]] = ..., attempts: _Optional[int] = ..., last_http_status: _Optional[int] = ..., last_error: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAlertRuleRequest(_message.Message):
    __slots__ = ("tenant_id", "rule")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    rule: AlertRule
    def __init__(self, tenant_id: _Optional[str] = ..., rule: _Optional[_Union[AlertRule, _Mapping]] = ...) -> None: ...

class CreateAlertRuleResponse(_message.Message):
    __slots__ = ("alert", "webhook_secret")
    ALERT_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    webhook_secret: str
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ..., webhook_secret: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts",)
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ...) -> None: ...

class GetAlertRequest(_message.Message):
    __slots__ = ("tenant_id", "rule_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    rule_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., rule_id: _Optional[str] = ...) -> None: ...

class GetAlertResponse(_message.Message):
    __slots__ = ("alert",)
    ALERT_FIELD_NUMBER: _ClassVar[int]
    alert: Alert
    def __init__(self, alert: _Optional[_Union[Alert, _Mapping]] = ...) -> None: ...

class DeleteAlertRuleRequest(_message.Message):
    __slots__ = ("tenant_id", "rule_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    rule_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., rule_id: _Optional[str] = ...) -> None: ...

class DeleteAlertRuleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAlertDeliveriesRequest(_message.Message):
    __slots__ = ("tenant_id", "rule_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    rule_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., rule_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlertDeliveriesResponse(_message.Message):
    __slots__ = ("deliveries", "next_page_token")
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[AlertDelivery]
    next_page_token: str
    def __init__(self, deliveries: _Optional[_Iterable[_Union[AlertDelivery, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
