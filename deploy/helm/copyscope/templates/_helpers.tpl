{{/* The chart's name, or nameOverride. */}}
{{- define "copyscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The objects' name: fullnameOverride, the release name when it holds the chart's
name, else release-chart; at most 63 characters (DNS label). */}}
{{- define "copyscope.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "copyscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the agent pods; never change them between releases. */}}
{{- define "copyscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "copyscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "copyscope.labels" -}}
helm.sh/chart: {{ include "copyscope.chart" . }}
{{ include "copyscope.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: agent
app.kubernetes.io/part-of: copyscope
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The agent's service account. */}}
{{- define "copyscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "copyscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "copyscope.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The capabilities the agent container adds to an empty set, one per line. */}}
{{- define "copyscope.capabilities" -}}
- BPF
- PERFMON
- SYS_PTRACE
- DAC_READ_SEARCH
{{- if .Values.security.legacyMemlock }}
- SYS_RESOURCE
{{- end }}
{{- if .Values.security.legacySysAdmin }}
- SYS_ADMIN
{{- end }}
{{- if .Values.security.runAsUser }}
- SETUID
- SETGID
{{- end }}
{{- end }}

{{/* COPYSCOPE_USER: runAsUser:runAsGroup, the group defaulting to the same number. */}}
{{- define "copyscope.user" -}}
{{- $uid := int64 .Values.security.runAsUser }}
{{- printf "%d:%d" $uid (int64 (default $uid .Values.security.runAsGroup)) }}
{{- end }}
