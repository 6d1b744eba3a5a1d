{{/* Names: <release>-multihome unless the release is already called multihome. */}}
{{- define "multihome.fullname" -}}
{{- if contains "multihome" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-multihome" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "multihome.selectorLabels" -}}
app.kubernetes.io/name: multihome
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "multihome.labels" -}}
{{ include "multihome.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The controller's Pods: a name of their own, so the webhook's Service and PDB never select them. */}}
{{- define "multihome.controllerSelectorLabels" -}}
app.kubernetes.io/name: multihome-controller
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "multihome.controllerLabels" -}}
{{ include "multihome.controllerSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "multihome.controllerServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-controller" (include "multihome.serviceAccountName" .) -}}
{{- else -}}
{{- required "controller.serviceAccountName is required when serviceAccount.create is false" .Values.controller.serviceAccountName -}}
{{- end -}}
{{- end -}}

{{- define "multihome.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "multihome.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "multihome.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "multihome.fullname" .)) .Values.selfManagedCertificates.secretName -}}
{{- end -}}

{{/* repository@digest when a digest is given (immutable), else repository:tag. */}}
{{- define "multihome.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Refuse combinations that would render something unsafe. */}}
{{- define "multihome.validate" -}}
{{- range $key := list "replicaCount" "resources" "priorityClassName" "podDisruptionBudget" "topologySpread" "nodeSelector" "tolerations" "affinity" "extraArgs" "extraEnv" "extraVolumes" "extraVolumeMounts" -}}
{{- if hasKey $.Values $key -}}
{{- fail (printf "%s moved to serve.%s in chart 0.2 (values are grouped per Deployment: serve and controller); rename it in your values" $key (ternary "replicas" $key (eq $key "replicaCount"))) -}}
{{- end -}}
{{- end -}}
{{- if and (not .Values.webhooks.podInjection.optIn) (eq .Values.webhooks.podInjection.failurePolicy "Fail") -}}
{{- fail "webhooks.podInjection: optIn false with failurePolicy Fail would stop Pod creation in every namespace while multihome is down; set failurePolicy Ignore, or keep optIn" -}}
{{- end -}}
{{- if and .Values.aws.ipManagement.enabled (not .Values.aws.enabled) -}}
{{- fail "aws.ipManagement.enabled needs aws.enabled: the controller assigns addresses through EC2" -}}
{{- end -}}
{{- if and .Values.certManager.enabled .Values.selfManagedCertificates.secretName -}}
{{- fail "certManager.enabled and selfManagedCertificates.secretName both set: choose one source of certificates" -}}
{{- end -}}
{{- end -}}

{{/* Namespaces no webhook ever sees: the release's, kube-system (the CNI), the configured ones, and ignored ones. */}}
{{- define "multihome.excludedNamespaces" -}}
- key: kubernetes.io/metadata.name
  operator: NotIn
  values:
    - {{ .Release.Namespace }}
    - kube-system
    {{- range .Values.webhooks.excludeNamespaces }}
    - {{ . | quote }}
    {{- end }}
- key: multihome.io/ignore
  operator: NotIn
  values: ["true"]
{{- end -}}

{{/* The caBundle to render: cert-manager injects its own; self-managed keeps what the cluster has. */}}
{{- define "multihome.caBundle" -}}
{{- if not .root.Values.certManager.enabled -}}
{{- $existing := lookup "admissionregistration.k8s.io/v1" .kind "" (include "multihome.fullname" .root) -}}
{{- if and $existing $existing.webhooks -}}
{{- with (index $existing.webhooks 0).clientConfig.caBundle }}
caBundle: {{ . }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "multihome.clientConfig" -}}
clientConfig:
  service:
    name: {{ include "multihome.fullname" .root }}
    namespace: {{ .root.Release.Namespace }}
    path: {{ .path }}
    port: {{ int64 .root.Values.service.port }}
  {{- with (include "multihome.caBundle" (dict "root" .root "kind" .kind) | trim) }}
  {{- . | nindent 2 }}
  {{- end }}
{{- end -}}
