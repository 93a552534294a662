{{/* Names, labels and the image reference shared by the templates. */}}

{{- define "modelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "modelgate.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "modelgate.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modelgate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "modelgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelgate
{{- end -}}

{{- define "modelgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "modelgate.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "modelgate.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "modelgate.webhookName" -}}
{{- printf "%s-webhook" (include "modelgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modelgate.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "modelgate.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RBAC rules for the namespaces the operator works in. */}}
{{- define "modelgate.namespacedRules" -}}
# Exactly the calls the operator makes (tests/realcluster compares these
# rules with the requests the API server's audit log records).
# get: after a rollback, the release put back is read for its registered
# version (the MLflow alias goes back to it).
- apiGroups: [modelgate.dev]
  resources: [modelreleases]
  verbs: [get, list, watch, patch]
- apiGroups: [modelgate.dev]
  resources: [qualitygates, environments]
  verbs: [get, list, watch, patch]
- apiGroups: [modelgate.dev]
  resources: [modelreleases/status, qualitygates/status, environments/status]
  verbs: [patch]
# Training Jobs are owned by their release with blockOwnerDeletion, which
# clusters enforcing owner-reference permissions check against this.
- apiGroups: [modelgate.dev]
  resources: [modelreleases/finalizers]
  verbs: [update]
# watch: Jobs and Deployments are read from watches kept in memory (by the
# app.kubernetes.io/managed-by=modelgate label), not on every reconcile.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- if and .Values.peering.enabled .Values.watchNamespaces }}
# Namespaced peering objects: only when watching namespaces by name.
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [get, list, watch, patch]
{{- end }}
{{- if .Values.rbac.argoCD }}
- apiGroups: [argoproj.io]
  resources: [applications]
  verbs: [get]
{{- end }}
{{- if .Values.rbac.gatewayAPI }}
# policy.rollout's traffic through a Gateway: the model's HTTPRoute carries
# the split (read when the challenger goes, to put the live model back).
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, create, patch]
{{- end }}
{{- end }}

{{/* Labels added to the generated CRDs (which already carry name and part-of). */}}
{{- define "modelgate.crdLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
