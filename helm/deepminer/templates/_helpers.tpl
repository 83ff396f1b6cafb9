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
{{- with .Values.holdoutImages }}
{{- if and .existingClaim (has (trimSuffix "/" .mountPath) (list "/data" "/tmp" (trimSuffix "/" $.Values.bundle.mountPath))) }}
{{- fail (printf "holdoutImages.mountPath %s is where the server container already mounts /data, /tmp or the bundle: choose another folder" .mountPath) }}
{{- end }}
{{- end }}
{{- if .Values.dimse.enabled }}
{{- if not .Values.dimse.allowedCallingAeTitles }}
{{- fail "dimse.allowedCallingAeTitles is empty: list the calling AE titles of the PACS or modalities that may send images to the DICOM listener, e.g. --set 'dimse.allowedCallingAeTitles={ORTHANC}'; it has no open default" }}
{{- end }}
{{- if include "deepminer.sqlite" . }}
{{- fail "the DICOM listener (dimse.enabled) reads the unit labels from the API's store, and an SQLite store lives in the API's pod: set database.url or database.existingSecret (PostgreSQL)" }}
{{- end }}
{{- if and .Values.dimse.destination.aeTitle (not .Values.dimse.destination.host) }}
{{- fail "dimse.destination.host is required with dimse.destination.aeTitle" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Selector labels of the DICOM listener's pods (dimse.enabled).
*/}}
{{- define "deepminer.dimseSelectorLabels" -}}
{{ include "deepminer.selectorLabels" . }}
app.kubernetes.io/component: dimse
{{- end }}

{{/*
The DICOM listener's resources' name.
*/}}
{{- define "deepminer.dimseName" -}}
{{- printf "%s-dimse" (include "deepminer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The port of the listener's Storage SCP inside its pod (DEEPMINER_DIMSE_PORT): unprivileged, as the
container runs as a non-root user without capabilities; the Service maps dimse.service.port onto it.
*/}}
{{- define "deepminer.dimseContainerPort" -}}
11112
{{- end }}

{{/*
The init container that copies the model bundle out of bundle.initImage, when it is set
(a list item, or nothing). Both the API's and the listener's pods load the bundle.
*/}}
{{- define "deepminer.bundleInitContainer" -}}
{{- $bundle := .Values.bundle }}
{{- if $bundle.initImage.repository }}
- name: copy-bundle
  image: {{ printf "%s:%s" $bundle.initImage.repository (required "bundle.initImage.tag is required with bundle.initImage.repository" $bundle.initImage.tag | toString) }}
  imagePullPolicy: {{ $bundle.initImage.pullPolicy }}
  command: ["cp", "-R", "{{ trimSuffix "/" $bundle.initImage.path }}/.", "/bundle/"]
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml $bundle.initImage.resources | nindent 4 }}
  volumeMounts:
    - name: bundle
      mountPath: /bundle
{{- end }}
{{- end }}

{{/*
The bundle's volume mount in a container that loads it (a list item, or nothing when the bundle is baked
into the image: a volume would hide it).
*/}}
{{- define "deepminer.bundleVolumeMount" -}}
{{- $bundle := .Values.bundle }}
{{- if or $bundle.persistentVolumeClaim.claimName $bundle.initImage.repository }}
- name: bundle
  mountPath: {{ $bundle.mountPath }}
  readOnly: true
  {{- with $bundle.persistentVolumeClaim.subPath }}
  subPath: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{/*
The bundle's volume (a list item, or nothing).
*/}}
{{- define "deepminer.bundleVolume" -}}
{{- $bundle := .Values.bundle }}
{{- if $bundle.persistentVolumeClaim.claimName }}
- name: bundle
  persistentVolumeClaim:
    claimName: {{ $bundle.persistentVolumeClaim.claimName }}
    readOnly: true
{{- else if $bundle.initImage.repository }}
- name: bundle
  emptyDir:
    sizeLimit: {{ $bundle.initImage.sizeLimit }}
{{- end }}
{{- end }}

{{/*
A container's resources with the GPU added when gpu.enabled: (list $ resources).
*/}}
{{- define "deepminer.resources" -}}
{{- $root := index . 0 }}
{{- $resources := deepCopy (index . 1) }}
{{- if $root.Values.gpu.enabled }}
{{- $limits := deepCopy (default (dict) $resources.limits) }}
{{- $_ := set $limits $root.Values.gpu.resourceName (int $root.Values.gpu.count) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{/*
Where a pod that runs the model lands: the runtime class, node selector and tolerations, with the GPU's
when gpu.enabled (pod spec fields, or nothing).
*/}}
{{- define "deepminer.modelPlacement" -}}
{{- $nodeSelector := deepCopy .Values.nodeSelector }}
{{- $tolerations := .Values.tolerations }}
{{- if .Values.gpu.enabled }}
{{- $nodeSelector = merge $nodeSelector .Values.gpu.nodeSelector }}
{{- $tolerations = concat .Values.tolerations .Values.gpu.tolerations }}
{{- if .Values.gpu.runtimeClassName }}
runtimeClassName: {{ .Values.gpu.runtimeClassName }}
{{- end }}
{{- end }}
{{- with $nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The listener's headless Service: the StatefulSet's governing Service and the metrics port's.
*/}}
{{- define "deepminer.dimseHeadlessName" -}}
{{- printf "%s-dimse-headless" (include "deepminer.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
