{{/* Names, labels and the pieces the Deployment and the migration Job share. */}}

{{- define "eventline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eventline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "eventline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "eventline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "eventline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "eventline.labels" -}}
helm.sh/chart: {{ include "eventline.chart" . }}
{{ include "eventline.selectorLabels" . }}
app.kubernetes.io/version: {{ include "eventline.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: eventline
{{- end -}}

{{- define "eventline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "eventline.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "eventline.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "eventline.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (include "eventline.imageTag" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the admin token and the bootstrap API key. */}}
{{- define "eventline.secretName" -}}
{{- default (include "eventline.fullname" .) .Values.existingSecret -}}
{{- end -}}

{{- define "eventline.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "eventline.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Secret and key holding the database URL. */}}
{{- define "eventline.databaseSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- include "eventline.postgresql.fullname" . -}}
{{- else -}}
{{- .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "eventline.databaseUrlKey" -}}
{{- if .Values.postgresql.enabled -}}url{{- else -}}{{ .Values.database.urlKey }}{{- end -}}
{{- end -}}

{{/* The port of a listen address such as 0.0.0.0:50051 or [::]:50051. */}}
{{- define "eventline.port" -}}
{{- splitList ":" . | last | int -}}
{{- end -}}

{{/*
One EVENTLINE_* variable per leaf of .Values.config, named by its path: config.grpc.addr
is EVENTLINE_GRPC_ADDR. Nothing here lists the settings, so a setting the server gains
is set from values.yaml without a chart change. Unset (null) values are left out.
*/}}
{{- define "eventline.configEnv.walk" -}}
{{- $prefix := .prefix -}}
{{- range $key, $value := .map -}}
{{- $name := printf "%s_%s" $prefix $key | upper -}}
{{- if kindIs "map" $value -}}
{{- include "eventline.configEnv.walk" (dict "prefix" $name "map" $value) -}}
{{- else if not (kindIs "invalid" $value) }}
- name: {{ $name }}
  value: {{ include "eventline.envValue" $value | quote }}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* A value as the server's figment environment provider reads it. */}}
{{- define "eventline.envValue" -}}
{{- if kindIs "slice" . -}}
{{- toJson . -}}
{{- else if kindIs "float64" . -}}
{{- if eq (floor .) . -}}{{- printf "%d" (int64 .) -}}{{- else -}}{{- printf "%v" . -}}{{- end -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "eventline.configEnv" -}}
{{- include "eventline.configEnv.walk" (dict "prefix" "EVENTLINE" "map" .Values.config) -}}
{{- end -}}

{{/* Secrets as EVENTLINE_* variables: database URL(s), admin token, bootstrap key. */}}
{{- define "eventline.secretEnv" -}}
- name: EVENTLINE_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "eventline.databaseSecretName" . }}
      key: {{ include "eventline.databaseUrlKey" . }}
{{- if and (not .Values.postgresql.enabled) .Values.database.readUrlKey }}
- name: EVENTLINE_DATABASE_READ_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.readUrlKey }}
{{- end }}
{{- end -}}

{{- define "eventline.authEnv" -}}
- name: EVENTLINE_ADMIN_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "eventline.secretName" . }}
      key: {{ .Values.secretKeys.adminToken }}
      optional: {{ not (empty .Values.existingSecret) }}
- name: EVENTLINE_BOOTSTRAP_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "eventline.secretName" . }}
      key: {{ .Values.secretKeys.bootstrapApiKey }}
      optional: {{ not (empty .Values.existingSecret) }}
{{- end -}}

{{/*
A generated secret value that survives upgrades: the value already in the cluster when
there is one (lookup), else a new random one. Arguments: ctx, name, key, length.
*/}}
{{- define "eventline.keptSecret" -}}
{{- $existing := lookup "v1" "Secret" .ctx.Release.Namespace .name -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else -}}
{{- printf "%s%s" (default "" .prefix) (randAlphaNum (int .length)) -}}
{{- end -}}
{{- end -}}

{{/* Settings the chart refuses before anything is applied. */}}
{{- define "eventline.validate" -}}
{{- /* First, so it is the reason given whatever else is set with the bundled database. */ -}}
{{- if and .Values.database.citus .Values.postgresql.enabled -}}
{{- fail "database.citus needs an external Citus coordinator, and the bundled PostgreSQL (postgresql.enabled=true) has no Citus: set postgresql.enabled=false and database.existingSecret to a Secret holding the coordinator's URL" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled .Values.database.existingSecret -}}
{{- fail "postgresql.enabled and database.existingSecret exclude each other: turn the bundled PostgreSQL off (postgresql.enabled=false) to use an external database" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.existingSecret) -}}
{{- fail "no database: set database.existingSecret (a Secret holding the PostgreSQL URL under database.urlKey) or postgresql.enabled=true" -}}
{{- end -}}
{{- if and .Values.database.readUrlKey .Values.postgresql.enabled -}}
{{- fail "database.readUrlKey needs an external database (postgresql.enabled=false, database.existingSecret)" -}}
{{- end -}}
{{- end -}}

{{/*
With the bundled PostgreSQL, wait for it before starting: the server (and `migrate`) exit
when the database does not answer at start, and a crash-looping pod backs off for minutes.
*/}}
{{- define "eventline.waitForDatabase" -}}
{{- if .Values.postgresql.enabled }}
initContainers:
  - name: wait-for-postgresql
    image: {{ printf "%s:%s" .Values.postgresql.image.repository .Values.postgresql.image.tag | quote }}
    imagePullPolicy: {{ .Values.postgresql.image.pullPolicy }}
    command:
      - sh
      - -c
      - until pg_isready -q -h "$HOST" -p "$PORT" -t 2; do echo "waiting for $HOST:$PORT"; sleep 2; done
    env:
      - name: HOST
        value: {{ include "eventline.postgresql.fullname" . }}
      - name: PORT
        value: {{ .Values.postgresql.port | quote }}
    resources:
      requests:
        cpu: 10m
        memory: 16Mi
      limits:
        memory: 64Mi
    securityContext:
      {{- toYaml .Values.securityContext | nindent 6 }}
{{- end }}
{{- end -}}
