{{- define "ksr.name" -}}ksr-operator{{- end -}}

{{- define "ksr.selectorLabels" -}}
app.kubernetes.io/name: ksr-operator
app.kubernetes.io/component: operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ksr.labels" -}}
{{ include "ksr.selectorLabels" . }}
app.kubernetes.io/part-of: kube-site-recovery
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ksr.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{ default "ksr-operator" .Values.serviceAccount.name }}
{{- else -}}
{{ required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end -}}
{{- end -}}

{{/* ServiceMonitor, PrometheusRule and the dashboard need the Prometheus Operator's API. */}}
{{- define "ksr.monitoringApi" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/* The project's image, which the operator runs and places its replicators with. */}}
{{- define "ksr.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}
