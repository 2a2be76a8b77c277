{{/* Chart name. */}}
{{- define "lark-sink.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name: the release name, plus the chart name unless it already holds it. */}}
{{- define "lark-sink.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lark-sink.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "lark-sink.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lark-sink.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "lark-sink.labels" -}}
helm.sh/chart: {{ include "lark-sink.chart" . }}
{{ include "lark-sink.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: connector
{{- end }}

{{- define "lark-sink.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lark-sink.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the app secret, admin token and Kafka password. */}}
{{- define "lark-sink.secretName" -}}
{{- if .Values.secrets.create }}
{{- include "lark-sink.fullname" . }}
{{- else }}
{{- required "secrets.existingSecret is required when secrets.create=false" .Values.secrets.existingSecret }}
{{- end }}
{{- end }}

{{/* Key of each value in that Secret; empty = not configured. */}}
{{- define "lark-sink.secretKey.larkAppSecret" -}}
{{- if .Values.secrets.create }}lark-app-secret{{ else }}{{ .Values.secrets.existingSecretKeys.larkAppSecret }}{{ end }}
{{- end }}

{{- define "lark-sink.secretKey.adminToken" -}}
{{- if .Values.secrets.create }}{{ if .Values.secrets.adminToken }}admin-token{{ end }}{{ else }}{{ .Values.secrets.existingSecretKeys.adminToken }}{{ end }}
{{- end }}

{{- define "lark-sink.secretKey.kafkaPassword" -}}
{{- if .Values.secrets.create }}{{ if .Values.secrets.kafkaPassword }}kafka-password{{ end }}{{ else }}{{ .Values.secrets.existingSecretKeys.kafkaPassword }}{{ end }}
{{- end }}

{{/*
The connector config as JSON: the values' config plus the keys the chart owns (the admin listener
and the ${env:...} references to the Secret).
*/}}
{{- define "lark-sink.connectorJson" -}}
{{- $config := deepCopy (.Values.connector.config | default dict) }}
{{- $_ := set $config "admin.listener" (printf "0.0.0.0:%v" .Values.service.port) }}
{{- $_ := set $config "lark.app.secret" "${env:LARK_APP_SECRET}" }}
{{- if include "lark-sink.secretKey.adminToken" . }}
{{- $_ := set $config "admin.token" "${env:LARK_SINK_ADMIN_TOKEN}" }}
{{- end }}
{{- if include "lark-sink.secretKey.kafkaPassword" . }}
{{- $_ := set $config "kafka.sasl.password" "${env:KAFKA_PASSWORD}" }}
{{- end }}
{{- dict "name" (required "connector.name is required" .Values.connector.name) "config" $config | toPrettyJson }}
{{- end }}

{{/* shutdown.timeout.ms / 1000 + 15, unless terminationGracePeriodSeconds is set. */}}
{{- define "lark-sink.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- $ms := index (.Values.connector.config | default dict) "shutdown.timeout.ms" | default 30000 | int }}
{{- add (div $ms 1000) 15 }}
{{- end }}
{{- end }}
