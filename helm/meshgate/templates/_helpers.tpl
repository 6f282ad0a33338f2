{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "meshgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects. */}}
{{- define "meshgate.fullname" -}}
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

{{- define "meshgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meshgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshgate.labels" -}}
helm.sh/chart: {{ include "meshgate.chart" . }}
{{ include "meshgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "meshgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Fail early on values meshgate cannot run with. */}}
{{- define "meshgate.validate" -}}
{{- if not (has .Values.source (list "files" "kubernetes")) }}
{{- fail (printf "source must be files or kubernetes, got %q" .Values.source) }}
{{- end }}
{{- if not (has .Values.accessLog (list "off" "text" "json")) }}
{{- fail (printf "accessLog must be off, text or json, got %q" .Values.accessLog) }}
{{- end }}
{{- if not (has .Values.service.type (list "LoadBalancer" "ClusterIP" "NodePort")) }}
{{- fail (printf "service.type must be LoadBalancer, ClusterIP or NodePort, got %q" .Values.service.type) }}
{{- end }}
{{- range $file, $_ := .Values.config }}
{{- if not (or (hasSuffix ".yaml" $file) (hasSuffix ".yml" $file)) }}
{{- fail (printf "config key %q must end in .yaml or .yml (meshgate reads no other files)" $file) }}
{{- end }}
{{- end }}
{{- $drain := add .Values.drain.delaySeconds .Values.drain.timeoutSeconds }}
{{- if and .Values.terminationGracePeriodSeconds (le (int .Values.terminationGracePeriodSeconds) (int $drain)) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed drain.delaySeconds + drain.timeoutSeconds (%v)" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- end }}

{{- define "meshgate.terminationGracePeriodSeconds" -}}
{{- if .Values.terminationGracePeriodSeconds }}
{{- .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add .Values.drain.delaySeconds .Values.drain.timeoutSeconds 10 }}
{{- end }}
{{- end }}

{{/* The read-only rules of Kubernetes mode: exactly what meshgate watches. */}}
{{- define "meshgate.rbacRules" -}}
- apiGroups: ["networking.istio.io"]
  resources: ["gateways", "virtualservices", "destinationrules", "serviceentries", "workloadentries"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["services", "pods", "secrets"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- end }}
