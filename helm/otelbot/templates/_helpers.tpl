{{- define "otelbot.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otelbot.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "otelbot.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otelbot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otelbot.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "otelbot.serviceName" -}}
{{- default (include "otelbot.fullname" .) .Values.serviceName -}}
{{- end -}}

{{- define "otelbot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "otelbot.agentImage" -}}
{{- if .Values.agent.image.repository -}}
{{- printf "%s:%s" .Values.agent.image.repository (default .Chart.AppVersion .Values.agent.image.tag) -}}
{{- else -}}
{{- include "otelbot.image" . -}}
{{- end -}}
{{- end -}}

{{/* Where the bot and the agent send OTLP. */}}
{{- define "otelbot.otlpEndpoint" -}}
{{- if eq .Values.collector.mode "sidecar" -}}
{{- if eq .Values.otel.protocol "grpc" -}}http://127.0.0.1:4317{{- else -}}http://127.0.0.1:4318{{- end -}}
{{- else -}}
{{- required "collector.endpoint is required when collector.mode is external" .Values.collector.endpoint -}}
{{- end -}}
{{- end -}}

{{/* The OTEL_* environment shared by the bot and the agent. */}}
{{- define "otelbot.otelEnv" -}}
- name: OTEL_SERVICE_NAME
  value: {{ include "otelbot.serviceName" . | quote }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ include "otelbot.otlpEndpoint" . | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: {{ .Values.otel.protocol | quote }}
- name: OTEL_METRIC_EXPORT_INTERVAL
  value: {{ .Values.otel.metricExportInterval | quote }}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
- name: K8S_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ $attrs := list "k8s.pod.name=$(K8S_POD_NAME)" "k8s.pod.uid=$(K8S_POD_UID)" "k8s.namespace.name=$(K8S_NAMESPACE)" -}}
    {{- range $k, $v := .Values.otel.resourceAttributes -}}{{- $attrs = append $attrs (printf "%s=%s" $k $v) -}}{{- end -}}
    {{- join "," $attrs | quote }}
{{- end -}}

{{/* An exec probe: the agent's health server listens on 127.0.0.1 only, which the kubelet
     cannot reach over the pod IP, so the probe runs inside the container. */}}
{{- define "otelbot.agentProbe" -}}
exec:
  command:
    - python
    - -c
    - "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{{ .port }}{{ .path }}', timeout=3).status == 200 else 1)"
{{- end -}}

{{/* The otelbot-agent container; .poll says which targets this one polls. */}}
{{- define "otelbot.agentContainer" -}}
- name: otelbot-agent
  image: {{ include "otelbot.agentImage" .root | quote }}
  imagePullPolicy: {{ .root.Values.agent.image.pullPolicy }}
  command: ["otelbot-agent", "run", "--config", "/etc/otelbot-agent/agent.yaml"]
  env:
    {{- include "otelbot.otelEnv" .root | nindent 4 }}
    - name: OTELBOT_RUNTIME_DIR
      value: /var/run/otelbot
  livenessProbe:
    {{- include "otelbot.agentProbe" (dict "port" .root.Values.agent.healthPort "path" "/healthz") | nindent 4 }}
    periodSeconds: 30
    timeoutSeconds: 5
  readinessProbe:
    {{- include "otelbot.agentProbe" (dict "port" .root.Values.agent.healthPort "path" "/readyz") | nindent 4 }}
    periodSeconds: 15
    timeoutSeconds: 5
  securityContext:
    {{- toYaml .root.Values.securityContext | nindent 4 }}
  {{- with .root.Values.agent.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: agent-config
      mountPath: /etc/otelbot-agent
      readOnly: true
    - name: agent-state
      mountPath: /var/run/otelbot-agent
    {{- if .sidecar }}
    - name: otelbot-runtime
      mountPath: /var/run/otelbot
      readOnly: true
    {{- end }}
    {{- if and .poll .root.Values.database.enabled }}
    - name: database-secret
      mountPath: /var/run/secrets/otelbot/database
      readOnly: true
    {{- end }}
    {{- if and .poll .root.Values.redis.enabled }}
    - name: redis-secret
      mountPath: /var/run/secrets/otelbot/redis
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The agent's YAML config; .sidecar: watches the bot process and stats file; .poll: polls
     PostgreSQL and Redis. */}}
{{- define "otelbot.agentConfig" -}}
{{- $v := .root.Values -}}
intervals:
  fast: {{ $v.agent.intervals.fast }}
  slow: {{ $v.agent.intervals.slow }}
  advice: {{ $v.agent.intervals.advice }}
process:
  enabled: {{ .sidecar }}
  {{- if .sidecar }}
  pattern: {{ $v.agent.processPattern | quote }}
  {{- end }}
runtime:
  enabled: {{ .sidecar }}
  dir: /var/run/otelbot
  frozen_after: {{ $v.agent.frozenAfter }}
postgresql:
  enabled: {{ and .poll $v.database.enabled }}
  {{- if and .poll $v.database.enabled }}
  databases:
    - name: {{ include "otelbot.serviceName" .root | quote }}
      dsn_file: /var/run/secrets/otelbot/database/{{ $v.database.key }}
  {{- end }}
redis:
  enabled: {{ and .poll $v.redis.enabled }}
  {{- if and .poll $v.redis.enabled }}
  instances:
    - name: {{ include "otelbot.serviceName" .root | quote }}
      url_file: /var/run/secrets/otelbot/redis/{{ $v.redis.key }}
  {{- end }}
health:
  host: 127.0.0.1
  port: {{ $v.agent.healthPort }}
state_file: /var/run/otelbot-agent/state.json
{{- end -}}

{{- define "otelbot.secretVolumes" -}}
{{- if and .poll .root.Values.database.enabled }}
- name: database-secret
  secret:
    secretName: {{ .root.Values.database.existingSecret }}
    items:
      - key: {{ .root.Values.database.key }}
        path: {{ .root.Values.database.key }}
{{- end }}
{{- if and .poll .root.Values.redis.enabled }}
- name: redis-secret
  secret:
    secretName: {{ .root.Values.redis.existingSecret }}
    items:
      - key: {{ .root.Values.redis.key }}
        path: {{ .root.Values.redis.key }}
{{- end }}
{{- end -}}
