{{/*
Expand the name of the chart.
*/}}
{{- define "deepminer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
A default fully qualified app name, truncated at 63 characters (the DNS label limit).
A release name that already contains the chart name is used as it is.
*/}}
{{- define "deepminer.fullname" -}}
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

{{/*
Chart name and version, as used by the chart label.
*/}}
{{- define "deepminer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "deepminer.labels" -}}
helm.sh/chart: {{ include "deepminer.chart" . }}
{{ include "deepminer.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "deepminer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deepminer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the API pods. The component keeps the migration and test pods
out of the Service, the PodDisruptionBudget and the ServiceMonitor.
*/}}
{{- define "deepminer.serverSelectorLabels" -}}
{{ include "deepminer.selectorLabels" . }}
app.kubernetes.io/component: server
{{- end }}

{{/*
The name of the service account to use.
*/}}
{{- define "deepminer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "deepminer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The application image (tag defaults to the chart's appVersion).
*/}}
{{- define "deepminer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/*
The port the server listens on inside the pod (DEEPMINER_PORT).
*/}}
{{- define "deepminer.containerPort" -}}
8000
{{- end }}

{{/*
"true" when the unit-label store is an SQLite file in the pod's data volume,
i.e. neither database.url nor database.existingSecret is set.
*/}}
{{- define "deepminer.sqlite" -}}
{{- if and (not .Values.database.url) (not .Values.database.existingSecret) }}true{{- end }}
{{- end }}

{{/*
"true" when the chart renders its own Secret.
*/}}
{{- define "deepminer.ownSecret" -}}
{{- if or (and .Values.database.url (not .Values.database.existingSecret)) .Values.secretEnv }}true{{- end }}
{{- end }}

{{/*
envFrom of every container that talks to the database or reads settings.
*/}}
{{- define "deepminer.envFrom" -}}
- configMapRef:
    name: {{ include "deepminer.fullname" . }}
{{- if include "deepminer.ownSecret" . }}
- secretRef:
    name: {{ include "deepminer.fullname" . }}
{{- end }}
{{- with .Values.database.existingSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- end }}

{{/*
Refuse value combinations that would render but not work.
*/}}
{{- define "deepminer.validate" -}}
{{- if and .Values.bundle.persistentVolumeClaim.claimName .Values.bundle.initImage.repository }}
{{- fail "set either bundle.persistentVolumeClaim.claimName or bundle.initImage.repository, not both" }}
{{- end }}
{{- if and (include "deepminer.sqlite" .) (or (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled) }}
{{- fail "an SQLite store lives in one pod: set database.url or database.existingSecret (PostgreSQL) to run more than one replica or to autoscale" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (not .Values.autoscaling.targetCPUUtilizationPercentage) (not .Values.autoscaling.inflight.enabled) }}
{{- fail "autoscaling needs a metric: set autoscaling.targetCPUUtilizationPercentage or enable autoscaling.inflight" }}
{{- end }}
{{- end }}
