{{/*
Shared defines. Every per-component file is a one-line include of one of these, called with
(dict "component" "gateway" "values" .Values.gateway "root" $).
*/}}

{{- define "switchboard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.fullname" -}}
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

{{- define "switchboard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Name of a component's objects: <fullname>-<component>. Call with (dict "component" .. "root" $). */}}
{{- define "switchboard.componentName" -}}
{{- printf "%s-%s" (include "switchboard.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "switchboard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchboard.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "switchboard.labels" -}}
helm.sh/chart: {{ include "switchboard.chart" .root }}
{{ include "switchboard.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: switchboard
{{- end }}

{{- define "switchboard.image" -}}
{{- $image := .Values.image }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default .Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{/* The components of this chart, in order, with their values. */}}
{{- define "switchboard.components" -}}
{{- toYaml (list "gateway" "rooms" "streams" "handlers") }}
{{- end }}

{{/* The shared ConfigMap's name. */}}
{{- define "switchboard.configName" -}}
{{- printf "%s-config" (include "switchboard.fullname" .) }}
{{- end }}

{{/* The ConfigMap holding the channel namespaces file ("" when none is configured). */}}
{{- define "switchboard.channelsConfigMap" -}}
{{- if .Values.channels.existingConfigMap }}
{{- .Values.channels.existingConfigMap }}
{{- else if .Values.channels.namespaces }}
{{- printf "%s-channels" (include "switchboard.fullname" .) }}
{{- end }}
{{- end }}

{{/* "true" when tokens are HMAC-signed (SECRET_KEY), "false" for RS or ES public keys. */}}
{{- define "switchboard.hmac" -}}
{{- hasPrefix "HS" (first .Values.auth.algorithms) }}
{{- end }}

{{- define "switchboard.redisHost" -}}
{{- printf "%s-redis" (include "switchboard.fullname" .) }}
{{- end }}

{{/* Chart-wide checks; a bad combination stops `helm install` with one line. */}}
{{- define "switchboard.validate" -}}
{{- $redis := .Values.redis }}
{{- if and $redis.bundled $redis.existingSecret }}
{{- fail "redis: set either redis.bundled=true or redis.existingSecret, not both" }}
{{- end }}
{{- if and (not $redis.bundled) (not $redis.existingSecret) (not $redis.url) }}
{{- fail "redis: set redis.url, redis.existingSecret (key REDIS_URL) or redis.bundled=true" }}
{{- end }}
{{- if and $redis.bundled (not $redis.bundledServer.passwordSecret) }}
{{- fail "redis.bundledServer.passwordSecret: name the Secret holding the bundled Redis password" }}
{{- end }}
{{- if not .Values.auth.existingSecret }}
{{- fail "auth.existingSecret: name the Secret holding SECRET_KEY (or the public key for RS*/ES*)" }}
{{- end }}
{{- $hs := 0 }}
{{- range .Values.auth.algorithms }}{{ if hasPrefix "HS" . }}{{ $hs = add1 $hs }}{{ end }}{{ end }}
{{- if and (gt $hs 0) (ne (int $hs) (len .Values.auth.algorithms)) }}
{{- fail "auth.algorithms: do not mix HS* with RS*/ES*" }}
{{- end }}
{{- if and .Values.ingress.enabled .Values.ingress.tls.enabled (not .Values.ingress.tls.secretName) }}
{{- fail "ingress.tls.secretName: name the TLS Secret (cert-manager can create it)" }}
{{- end }}
{{- end }}

{{/* Per-component checks: the shutdown budget. */}}
{{- define "switchboard.validateComponent" -}}
{{- $v := .values }}
{{- $budget := add $v.shutdownTimeoutSeconds $v.preStopSleepSeconds }}
{{- if le (int $v.terminationGracePeriodSeconds) (int $budget) }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed shutdownTimeoutSeconds (%d) + preStopSleepSeconds (%d)" .component (int $v.terminationGracePeriodSeconds) (int $v.shutdownTimeoutSeconds) (int $v.preStopSleepSeconds)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail (printf "%s.autoscaling.maxReplicas must be >= minReplicas" .component) }}
{{- end }}
{{- end }}

{{/*
The container's env: listen address, shutdown budget, Redis, keys, component settings, extraEnv.
Names are exactly the ones the services' settings read (tests/deploy checks it).
*/}}
{{- define "switchboard.env" -}}
{{- $root := .root }}
{{- $v := .values }}
{{- $prefix := upper .component }}
- name: {{ $prefix }}_HOST
  value: "0.0.0.0"
- name: {{ $prefix }}_PORT
  value: {{ $v.port | quote }}
- name: {{ $prefix }}_SHUTDOWN_TIMEOUT_S
  value: {{ $v.shutdownTimeoutSeconds | quote }}
{{- $redis := $root.Values.redis }}
{{- if $redis.bundled }}
- name: KV_HOST
  value: {{ include "switchboard.redisHost" $root | quote }}
- name: KV_PORT
  value: "6379"
- name: KV_EVENTS_DB_INDEX
  value: "0"
- name: KV_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $redis.bundledServer.passwordSecret }}
      key: {{ $redis.bundledServer.passwordKey }}
{{- else if $redis.existingSecret }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ $redis.existingSecret }}
      key: {{ $redis.existingSecretKey }}
{{- end }}
{{- if eq (include "switchboard.hmac" $root) "true" }}
- name: SECRET_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $root.Values.auth.existingSecret }}
      key: {{ $root.Values.auth.secretKeyKey }}
{{- else }}
- name: JWT_PUBLIC_KEY_FILE
  value: {{ printf "/etc/switchboard/jwt/%s" $root.Values.auth.publicKeyKey | quote }}
{{- if $root.Values.auth.privateKeyKey }}
- name: JWT_PRIVATE_KEY_FILE
  value: {{ printf "/etc/switchboard/jwt/%s" $root.Values.auth.privateKeyKey | quote }}
{{- end }}
{{- end }}
{{- if eq .component "gateway" }}
{{- $s := $v.settings }}
- name: GATEWAY_HEARTBEAT_S
  value: {{ $s.heartbeatSeconds | quote }}
- name: GATEWAY_NODE_REPORT_S
  value: {{ $s.nodeReportSeconds | quote }}
- name: GATEWAY_CONNECT_TIMEOUT_S
  value: {{ $s.connectTimeoutSeconds | quote }}
- name: GATEWAY_MAX_MESSAGE_BYTES
  value: {{ $s.maxMessageBytes | int64 | quote }}
- name: GATEWAY_MAX_SUBSCRIPTIONS
  value: {{ $s.maxSubscriptions | int64 | quote }}
- name: GATEWAY_MAX_CONNECTIONS_PER_USER
  value: {{ $s.maxConnectionsPerUser | int64 | quote }}
- name: GATEWAY_COMMANDS_PER_S
  value: {{ $s.commandsPerSecond | quote }}
- name: GATEWAY_COMMAND_BURST
  value: {{ $s.commandBurst | int64 | quote }}
- name: GATEWAY_OUTBOX_MAX_BYTES
  value: {{ $s.outboxMaxBytes | int64 | quote }}
- name: GATEWAY_OUTBOX_MAX_FRAMES
  value: {{ $s.outboxMaxFrames | int64 | quote }}
{{- if $s.roomAccessUrl }}
- name: ROOM_ACCESS_URL
  value: {{ $s.roomAccessUrl | quote }}
{{- end }}
- name: ZOU_BRIDGE
  value: {{ $s.zouBridge | quote }}
- name: ZOU_BRIDGE_CHANNEL
  value: {{ $s.zouBridgeChannel | quote }}
- name: ZOU_PROJECT_SCOPING
  value: {{ $s.zouProjectScoping | quote }}
{{- end }}
{{- if eq .component "rooms" }}
{{- $s := $v.settings }}
- name: ROOMS_IDLE_TTL_S
  value: {{ $s.idleTtlSeconds | quote }}
- name: ROOMS_MAX
  value: {{ $s.maxRooms | int64 | quote }}
- name: ROOMS_MAX_STATE_BYTES
  value: {{ $s.maxStateBytes | int64 | quote }}
{{- end }}
{{- if eq .component "streams" }}
{{- $s := $v.settings }}
- name: STREAMS_MAXLEN
  value: {{ $s.maxLen | int64 | quote }}
- name: STREAMS_MAXLEN_EXACT
  value: {{ $s.maxLenExact | quote }}
- name: STREAMS_MAX_AGE_S
  value: {{ $s.maxAgeSeconds | quote }}
- name: STREAMS_MAX_ENTRY_BYTES
  value: {{ $s.maxEntryBytes | int64 | quote }}
- name: STREAMS_DEFAULT_ACCESS
  value: {{ $s.defaultAccess | quote }}
- name: STREAMS_ANNOUNCE
  value: {{ $s.announce | quote }}
{{- if $s.usersSecret }}
- name: STREAMS_USERS_FILE
  value: /etc/switchboard/users/users
{{- end }}
- name: FRAMES_MAXLEN
  value: {{ $s.frames.maxLen | int64 | quote }}
- name: FRAMES_DEFAULT_ACCESS
  value: {{ $s.frames.defaultAccess | quote }}
- name: FRAMES_LABELS_RATE
  value: {{ $s.frames.labelsRate | int64 | quote }}
- name: FRAMES_LABELS_RATE_WINDOW_S
  value: {{ $s.frames.labelsRateWindowSeconds | int64 | quote }}
{{- end }}
{{- if eq .component "handlers" }}
{{- $s := $v.settings }}
{{- if $s.handlersConfigMap }}
- name: EVENT_HANDLERS_FOLDER
  value: /etc/switchboard/handlers
{{- end }}
{{- if $s.tasksConfigMap }}
- name: TASKS_FOLDER
  value: /etc/switchboard/tasks
{{- end }}
- name: HANDLERS_ISOLATION
  value: {{ $s.isolation | quote }}
- name: HANDLERS_TIMEOUT_S
  value: {{ $s.timeoutSeconds | quote }}
- name: HANDLERS_RETRIES
  value: {{ $s.retries | int64 | quote }}
- name: HANDLERS_TASK_TIMEOUT_S
  value: {{ $s.taskTimeoutSeconds | quote }}
{{- end }}
{{- range $name, $value := $v.extraEnv }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* Volumes and their mounts: /tmp (HOME, TMPDIR) and the configuration files. */}}
{{- define "switchboard.volumes" -}}
{{- $root := .root }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .values.tmpSizeLimit }}
{{- with include "switchboard.channelsConfigMap" $root }}
- name: channels
  configMap:
    name: {{ . }}
{{- end }}
{{- if ne (include "switchboard.hmac" $root) "true" }}
- name: jwt
  secret:
    secretName: {{ $root.Values.auth.existingSecret }}
{{- end }}
{{- if eq .component "streams" }}
{{- with .values.settings.usersSecret }}
- name: users
  secret:
    secretName: {{ . }}
{{- end }}
{{- end }}
{{- if eq .component "handlers" }}
{{- with .values.settings.handlersConfigMap }}
- name: handlers
  configMap:
    name: {{ . }}
{{- end }}
{{- with .values.settings.tasksConfigMap }}
- name: tasks
  configMap:
    name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.volumeMounts" -}}
{{- $root := .root }}
- name: tmp
  mountPath: /tmp
{{- if include "switchboard.channelsConfigMap" $root }}
- name: channels
  mountPath: /etc/switchboard/channels
  readOnly: true
{{- end }}
{{- if ne (include "switchboard.hmac" $root) "true" }}
- name: jwt
  mountPath: /etc/switchboard/jwt
  readOnly: true
{{- end }}
{{- if and (eq .component "streams") .values.settings.usersSecret }}
- name: users
  mountPath: /etc/switchboard/users
  readOnly: true
{{- end }}
{{- if eq .component "handlers" }}
{{- if .values.settings.handlersConfigMap }}
- name: handlers
  mountPath: /etc/switchboard/handlers
  readOnly: true
{{- end }}
{{- if .values.settings.tasksConfigMap }}
- name: tasks
  mountPath: /etc/switchboard/tasks
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "switchboard.topologySpread" -}}
{{- $spread := .root.Values.topologySpread }}
{{- range $spread.topologyKeys }}
- maxSkew: {{ $spread.maxSkew }}
  topologyKey: {{ . }}
  whenUnsatisfiable: {{ $spread.whenUnsatisfiable }}
  matchLabelKeys: [pod-template-hash]
  labelSelector:
    matchLabels:
      {{- include "switchboard.selectorLabels" $ | nindent 6 }}
{{- end }}
{{- end }}

{{- define "switchboard.deployment" -}}
{{- if .values.enabled }}
{{- include "switchboard.validateComponent" . }}
{{- $root := .root }}
{{- $v := .values }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "switchboard.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "switchboard.labels" . | nindent 8 }}
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ print (include (print $root.Template.BasePath "/configmap.yaml") $root) (include (print $root.Template.BasePath "/channels-configmap.yaml") $root) | sha256sum }}
        {{- with $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- if $root.Values.topologySpread.enabled }}
      topologySpreadConstraints:
        {{- include "switchboard.topologySpread" . | trim | nindent 8 }}
      {{- end }}
      {{- with $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .component }}
          image: {{ include "switchboard.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["python", "-m", "services.{{ .component }}"]
          ports:
            - name: http
              containerPort: {{ $v.port }}
              protocol: TCP
          envFrom:
            - configMapRef:
                name: {{ include "switchboard.configName" $root }}
          env:
            {{- include "switchboard.env" . | trim | nindent 12 }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            {{- toYaml $v.probes.readiness | nindent 12 }}
          lifecycle:
            preStop:
              exec:
                command: ["sleep", {{ $v.preStopSleepSeconds | quote }}]
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          volumeMounts:
            {{- include "switchboard.volumeMounts" . | trim | nindent 12 }}
      volumes:
        {{- include "switchboard.volumes" . | trim | nindent 8 }}
{{- end }}
{{- end }}

{{- define "switchboard.service" -}}
{{- if .values.enabled }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "switchboard.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "switchboard.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ .values.port }}
      targetPort: http
      protocol: TCP
{{- end }}
{{- end }}

{{- define "switchboard.pdb" -}}
{{- if and .values.enabled .values.pdb.create }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "switchboard.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ .values.pdb.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "switchboard.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{- define "switchboard.hpa" -}}
{{- $a := .values.autoscaling }}
{{- if and .values.enabled $a.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "switchboard.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "switchboard.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "switchboard.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
    {{- with $a.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ . }}
    {{- end }}
  behavior:
    scaleDown:
      # Scaling a gateway down closes its sockets (1012, clients reconnect): go slowly.
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
{{- end }}
{{- end }}
