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

{{/* The GPU (CUDA) image: `concord.image` $ */}}
{{- define "concord.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The CPU-only image (torch from the CPU index): `concord.cpuImage` $ */}}
{{- define "concord.cpuImage" -}}
{{- $tag := default (printf "%s-cpu" (default .Chart.AppVersion .Values.image.tag)) .Values.image.cpuTag }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The image of a pod with that many GPUs: (list $ gpus) */}}
{{- define "concord.imageFor" -}}
{{- if gt (int (index . 1)) 0 }}{{ include "concord.image" (index . 0) }}{{ else }}{{ include "concord.cpuImage" (index . 0) }}{{ end }}
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

{{/* The bearer token the chart's Secret holds: auth.token, else derived from auth.seed, the
namespace and the release name. Deterministic, so two renders are identical. */}}
{{- define "concord.authToken" -}}
{{- if .Values.auth.token }}
{{- .Values.auth.token }}
{{- else }}
{{- printf "concord-auth/%s/%s/%s" .Release.Namespace .Release.Name .Values.auth.seed | sha256sum | trunc 48 }}
{{- end }}
{{- end }}

{{/* Secret name and key of the Qdrant API key ("" when there is none): `concord.qdrantSecret` $ -> "name key" */}}
{{- define "concord.qdrantSecret" -}}
{{- if .Values.qdrant.existingSecret }}
{{- printf "%s %s" .Values.qdrant.existingSecret .Values.qdrant.existingSecretKey }}
{{- else if .Values.qdrant.apiKey }}
{{- printf "%s-qdrant api-key" (include "concord.fullname" .) }}
{{- end }}
{{- end }}

{{/* A service's values: services.<name> deep-merged over serviceDefaults (deep copies, so
neither is changed): a map sets only its own keys, lists and scalars replace. */}}
{{- define "concord.serviceValues" -}}
{{- toYaml (mergeOverwrite (deepCopy (index . 0).Values.serviceDefaults) (deepCopy (index . 1))) }}
{{- end }}

{{/* Services whose image ships a KServe predictor module (services/<name>/kserve.py);
tests/deploy checks this list against the source tree. */}}
{{- define "concord.kserveModules" -}}
encoder
{{- end }}

{{/* Whether a service's model runs as an InferenceService: (list $ $svc name) -> "true" or "";
fails for a service asked to that has no KServe predictor module. */}}
{{- define "concord.asInferenceService" -}}
{{- $root := index . 0 }}{{- $svc := index . 1 }}{{- $name := index . 2 }}
{{- if and $root.Values.kserve.enabled $svc.kservePredictor }}
{{- $modules := splitList " " (include "concord.kserveModules" $root | trim) }}
{{- if not (has $name $modules) }}
{{- fail (printf "services.%s.kservePredictor: the Concord image has no KServe predictor for %s (no services.%s.kserve module; KServe runs: %s). Set it false: %s runs as a Deployment" $name $name $name (join ", " $modules) $name) }}
{{- end }}
{{- if ne $root.Values.kserve.deploymentMode "RawDeployment" }}
{{- fail (printf "kserve.deploymentMode %s: Knative gives a predictor one port, so %s's gRPC gateway cannot reach its v2 gRPC port; use RawDeployment" $root.Values.kserve.deploymentMode $name) }}
{{- end }}
{{- if $svc.enabled }}true{{ end }}
{{- end }}
{{- end }}

{{/* host:port of an InferenceService predictor's v2 gRPC endpoint (KServe RawDeployment names
the predictor's Service <isvc>-predictor and keeps every extra container port): (list $ name) */}}
{{- define "concord.predictorGrpcAddress" -}}
{{- $root := index . 0 }}
{{- printf "%s-predictor:%d" (include "concord.componentName" (list $root (index . 1))) (int (add1 $root.Values.kserve.httpPort)) }}
{{- end }}

{{/* CONCORD_SERVING__ADDRESSES: every enabled service at its Kubernetes Service, as JSON. */}}
{{- define "concord.addresses" -}}
{{- $addresses := dict }}
{{- range $name, $svc := .Values.services }}
{{- if $svc.enabled }}
{{- $_ := set $addresses $name (printf "%s:%v" (include "concord.componentName" (list $ $name)) $svc.port) }}
{{- end }}
{{- end }}
{{- toJson $addresses }}
{{- end }}

{{/* Device settings of a container: (list gpus resources). cuda when it has GPUs (a pod
scheduled without one then fails at start, clearly, instead of running slowly on the CPU); torch
threads from the CPU limit, rounded up, at least 1. */}}
{{- define "concord.deviceEnv" -}}
{{- $gpus := int (index . 0) }}{{- $resources := default dict (index . 1) }}
- name: CONCORD_DEVICE__DEFAULT
  value: {{ if gt $gpus 0 }}cuda{{ else }}cpu{{ end }}
{{- $cpu := dig "limits" "cpu" "" $resources | toString }}
{{- if $cpu }}
{{- $threads := 1 }}
{{- if hasSuffix "m" $cpu }}
{{- $threads = divf (float64 (trimSuffix "m" $cpu)) 1000 | ceil | int }}
{{- else }}
{{- $threads = float64 $cpu | ceil | int }}
{{- end }}
- name: CONCORD_DEVICE__TORCH_THREADS
  value: {{ max 1 $threads | quote }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll pods when the ConfigMap or the Secrets change: `concord.checksums` $ */}}
{{- define "concord.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}

{{/* preStop sleep: (list $s) */}}
{{- define "concord.lifecycle" -}}
{{- $s := index . 0 }}
{{- if gt (int $s.preStopSleepSeconds) 0 }}
{{- if ge (int $s.preStopSleepSeconds) (int $s.terminationGracePeriodSeconds) }}
{{- fail (printf "preStopSleepSeconds (%v) must be below terminationGracePeriodSeconds (%v), or the pod is killed before it drains" $s.preStopSleepSeconds $s.terminationGracePeriodSeconds) }}
{{- end }}
lifecycle:
  preStop:
    exec:
      command: [sleep, {{ $s.preStopSleepSeconds | quote }}]
{{- end }}
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
  {{- with include "concord.qdrantSecret" $root }}
  - name: CONCORD_QDRANT__API_KEY
    valueFrom:
      secretKeyRef:
        name: {{ first (splitList " " .) }}
        key: {{ last (splitList " " .) }}
  {{- end }}
  {{- if $s.port }}
  - name: CONCORD_SERVING__PORTS
    value: {{ dict $name $s.port | toJson | quote }}
  {{- end }}
  {{- include "concord.deviceEnv" (list (default 0 $s.gpus) $s.resources) | nindent 2 }}
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
  {{- if $root.Values.tls.enabled }}
  - name: tls
    secret:
      secretName: {{ $root.Values.tls.secretName }}
  {{- end }}
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

{{/* The port probes ask: the gRPC port, or under TLS its plaintext health-only twin: (list $ port) */}}
{{- define "concord.probePort" -}}
{{- $root := index . 0 }}{{- $port := index . 1 }}
{{- if $root.Values.tls.enabled }}{{ add $port $root.Values.tls.healthPortOffset }}{{ else }}{{ $port }}{{ end }}
{{- end }}

{{- define "concord.volumeMounts" -}}
volumeMounts:
  - name: home
    mountPath: /var/lib/concord
  - name: tmp
    mountPath: /tmp
  {{- if .Values.tls.enabled }}
  - name: tls
    mountPath: /etc/concord/tls
    readOnly: true
  {{- end }}
{{- end }}

{{/* Init container that waits until the encoder's model resolves in MLflow: (list $ $s name) */}}
{{- define "concord.initContainers" -}}
{{- $root := index . 0 }}{{- $s := index . 1 }}{{- $name := index . 2 }}
{{- if $s.waitForModel }}
{{- $init := merge (dict "gpus" 0 "resources" (dict "limits" (dict "cpu" 1))) $s }}
initContainers:
  - name: wait-for-model
    image: {{ include "concord.cpuImage" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    command: [python, -m, concord.serving.healthcheck, --wait-for-model, {{ $root.Values.trainOnInstall.activeDeadlineSeconds | quote }}]
    {{- include "concord.containerEnv" (list $root $init $name) | nindent 4 }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      requests: {cpu: 50m, memory: 256Mi}
      limits: {memory: 1Gi}
    {{- include "concord.volumeMounts" $root | nindent 4 }}
{{- end }}
{{- end }}
