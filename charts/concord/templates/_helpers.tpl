{{/* Names, labels and the shared pieces of every Concord pod (Deployment and InferenceService). */}}

{{- define "concord.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "concord.fullname" -}}
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

{{/* Name of a component's resources: (list $ "encoder") -> <fullname>-encoder */}}
{{- define "concord.componentName" -}}
{{- printf "%s-%s" (include "concord.fullname" (index . 0)) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "concord.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "concord.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* Labels of a component: (list $ "encoder") */}}
{{- define "concord.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ printf "%s-%s" $root.Chart.Name $root.Chart.Version | replace "+" "_" }}
{{ include "concord.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: concord
{{- with $root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "concord.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "concord.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "concord.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "concord.secretName" -}}
{{- default (include "concord.fullname" .) .Values.auth.existingSecret }}
{{- end }}

{{/* A service's values: serviceDefaults with each key set under services.<name> replacing it. */}}
{{- define "concord.serviceValues" -}}
{{- $merged := deepCopy (index . 0).Values.serviceDefaults }}
{{- range $key, $value := index . 1 }}
{{- $_ := set $merged $key $value }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* Whether a service renders as an InferenceService: (list $ $svc) -> "true" or "" */}}
{{- define "concord.asInferenceService" -}}
{{- if and (index . 0).Values.kserve.enabled (index . 1).predictor }}true{{ end }}
{{- end }}

{{- define "concord.kafkaBootstrap" -}}
{{- if .Values.kafka.bundled.enabled }}
{{- printf "%s:9092" (include "concord.componentName" (list . "kafka")) }}
{{- else }}
{{- required "kafka.bootstrapServers is required when kafka.enabled and not kafka.bundled.enabled" .Values.kafka.bootstrapServers }}
{{- end }}
{{- end }}

{{- define "concord.qdrantUrl" -}}
{{- if .Values.qdrant.bundled.enabled }}
{{- printf "http://%s:6333" (include "concord.componentName" (list . "qdrant")) }}
{{- else }}
{{- required "qdrant.url is required when qdrant.enabled and not qdrant.bundled.enabled" .Values.qdrant.url }}
{{- end }}
{{- end }}

{{- define "concord.mlflowUri" -}}
{{- if .Values.mlflow.bundled.enabled }}
{{- printf "http://%s:5000" (include "concord.componentName" (list . "mlflow")) }}
{{- else }}
{{- required "mlflow.trackingUri is required when mlflow.bundled.enabled is false" .Values.mlflow.trackingUri }}
{{- end }}
{{- end }}

{{/* Environment of every Concord container: the ConfigMap, the Secret, extra env. (list $ $s name) */}}
{{- define "concord.containerEnv" -}}
{{- $root := index . 0 }}{{- $s := index . 1 }}{{- $name := index . 2 }}
envFrom:
  - configMapRef:
      name: {{ include "concord.fullname" $root }}
  {{- with $s.envFrom }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
env:
  - name: CONCORD_SERVING__AUTH_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ include "concord.secretName" $root }}
        key: {{ $root.Values.auth.secretKey }}
  {{- if $root.Values.qdrant.apiKey }}
  - name: CONCORD_QDRANT__API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "concord.fullname" $root }}-qdrant
        key: api-key
  {{- end }}
  {{- if $s.port }}
  - name: CONCORD_SERVING__PORTS
    value: {{ dict $name $s.port | toJson | quote }}
  {{- end }}
  {{- with $s.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/* Pod-level fields shared by Deployments and InferenceService predictors: (list $ $s) */}}
{{- define "concord.podCommon" -}}
{{- $root := index . 0 }}{{- $s := index . 1 }}
serviceAccountName: {{ include "concord.serviceAccountName" $root }}
automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $s.terminationGracePeriodSeconds }}
{{- with $s.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $s.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $s.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: home
    emptyDir:
      sizeLimit: {{ $s.scratchSizeLimit }}
  - name: tmp
    emptyDir: {}
{{- end }}

{{/* Container resources with the GPU count added as an nvidia.com/gpu limit: (list $s) */}}
{{- define "concord.resources" -}}
{{- $s := index . 0 }}
{{- $resources := deepCopy (default dict $s.resources) }}
{{- if gt (int $s.gpus) 0 }}
{{- $limits := deepCopy (default dict $resources.limits) }}
{{- $_ := set $limits "nvidia.com/gpu" (int $s.gpus) }}
{{- $_ := set $resources "limits" $limits }}
{{- end }}
{{- toYaml $resources }}
{{- end }}

{{- define "concord.volumeMounts" -}}
volumeMounts:
  - name: home
    mountPath: /var/lib/concord
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/* Init container that waits until the encoder's model resolves in MLflow: (list $ $s name) */}}
{{- define "concord.initContainers" -}}
{{- $root := index . 0 }}{{- $s := index . 1 }}{{- $name := index . 2 }}
{{- if $s.waitForModel }}
initContainers:
  - name: wait-for-model
    image: {{ include "concord.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [python, -m, concord.healthcheck, --wait-for-model, {{ $root.Values.trainOnInstall.activeDeadlineSeconds | quote }}]
    {{- include "concord.containerEnv" (list $root $s $name) | nindent 4 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      requests: {cpu: 50m, memory: 256Mi}
      limits: {memory: 1Gi}
    {{- include "concord.volumeMounts" . | nindent 4 }}
{{- end }}
{{- end }}
