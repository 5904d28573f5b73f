{{/* Chart name, truncated to a DNS label. */}}
{{- define "riskstream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name; the release name alone when it already contains the chart name. */}}
{{- define "riskstream.fullname" -}}
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

{{- define "riskstream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "riskstream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "riskstream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "riskstream.labels" -}}
helm.sh/chart: {{ include "riskstream.chart" . }}
{{ include "riskstream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: riskstream
{{- end }}

{{/*
A service's resources are named <fullname>-<service>. StatefulSet names stay within
52 characters so that pod names and their controller-revision-hash label fit 63.
Call with (dict "root" $ "service" "velocity").
*/}}
{{- define "riskstream.serviceName" -}}
{{- printf "%s-%s" (include "riskstream.fullname" .root) .service | trunc 52 | trimSuffix "-" }}
{{- end }}

{{- define "riskstream.headlessName" -}}
{{- printf "%s-headless" (include "riskstream.serviceName" .) }}
{{- end }}

{{- define "riskstream.serviceSelectorLabels" -}}
{{ include "riskstream.selectorLabels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "riskstream.serviceLabels" -}}
{{ include "riskstream.labels" .root }}
app.kubernetes.io/component: {{ .service }}
{{- end }}

{{- define "riskstream.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The topic each service's consumer group reads its work from (the contract's table). */}}
{{- define "riskstream.inputTopic" -}}
{{- $topics := dict "orchestrator" "transactions" "velocity" "agent.velocity.requests" "profile" "agent.profile.requests" "geo" "agent.geo.requests" "decision" "agent.decision.requests" }}
{{- get $topics . }}
{{- end }}

{{/* PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL from kafka.tls / kafka.sasl. */}}
{{- define "riskstream.securityProtocol" -}}
{{- $k := .Values.kafka }}
{{- if and $k.sasl.enabled $k.tls.enabled }}SASL_SSL
{{- else if $k.sasl.enabled }}SASL_PLAINTEXT
{{- else if $k.tls.enabled }}SSL
{{- else }}PLAINTEXT
{{- end }}
{{- end }}

{{/* host:port,host:port from kafka://host:port;kafka://host:port (for KEDA). */}}
{{- define "riskstream.bootstrapServers" -}}
{{- regexReplaceAll "[a-zA-Z][a-zA-Z0-9+.-]*://" .Values.kafka.broker "" | replace ";" "," }}
{{- end }}

{{- define "riskstream.tlsDir" -}}/etc/riskstream/kafka-tls{{- end }}

{{- define "riskstream.validate" -}}
{{- $k := .Values.kafka }}
{{- if and $k.tls.enabled $k.tls.clientCert.enabled (not $k.tls.clientCert.secretName) }}
{{- fail "kafka.tls.clientCert.enabled needs kafka.tls.clientCert.secretName" }}
{{- end }}
{{- if and $k.sasl.enabled (not $k.sasl.secretName) }}
{{- fail "kafka.sasl.enabled needs kafka.sasl.secretName (the secret holding the password)" }}
{{- end }}
{{- end }}

{{/*
Environment shared by the workers and the topics job: Kafka and its security.
*/}}
{{- define "riskstream.kafkaEnv" -}}
{{- $k := .Values.kafka -}}
- name: RISKSTREAM_BROKER
  value: {{ $k.broker | quote }}
- name: RISKSTREAM_PARTITIONS
  value: {{ $k.partitions | quote }}
- name: RISKSTREAM_REPLICATION_FACTOR
  value: {{ $k.replicationFactor | quote }}
- name: RISKSTREAM_FETCH_MAX_WAIT_MS
  value: {{ $k.fetchMaxWaitMs | quote }}
- name: RISKSTREAM_SECURITY_PROTOCOL
  value: {{ include "riskstream.securityProtocol" . | quote }}
{{- if $k.tls.enabled }}
{{- if $k.tls.ca.secretName }}
- name: RISKSTREAM_SSL_CAFILE
  value: {{ printf "%s/ca.crt" (include "riskstream.tlsDir" .) | quote }}
{{- end }}
{{- if $k.tls.clientCert.enabled }}
- name: RISKSTREAM_SSL_CERTFILE
  value: {{ printf "%s/client.crt" (include "riskstream.tlsDir" .) | quote }}
- name: RISKSTREAM_SSL_KEYFILE
  value: {{ printf "%s/client.key" (include "riskstream.tlsDir" .) | quote }}
{{- end }}
{{- end }}
{{- if $k.sasl.enabled }}
- name: RISKSTREAM_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
- name: RISKSTREAM_SASL_USERNAME
{{- if $k.sasl.username }}
  value: {{ $k.sasl.username | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.secretName }}
      key: {{ $k.sasl.usernameKey }}
{{- end }}
- name: RISKSTREAM_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $k.sasl.secretName }}
      key: {{ $k.sasl.passwordKey }}
{{- end }}
{{- end }}

{{/* The projected volume of the CA and client certificate, when TLS needs files. */}}
{{- define "riskstream.tlsVolumeNeeded" -}}
{{- $t := .Values.kafka.tls }}
{{- if and $t.enabled (or $t.ca.secretName $t.clientCert.enabled) }}true{{ end }}
{{- end }}

{{- define "riskstream.tlsVolume" -}}
{{- $t := .Values.kafka.tls -}}
- name: kafka-tls
  projected:
    defaultMode: 0440
    sources:
      {{- if $t.ca.secretName }}
      - secret:
          name: {{ $t.ca.secretName }}
          items:
            - key: {{ $t.ca.key }}
              path: ca.crt
      {{- end }}
      {{- if $t.clientCert.enabled }}
      - secret:
          name: {{ $t.clientCert.secretName }}
          items:
            - key: {{ $t.clientCert.certKey }}
              path: client.crt
            - key: {{ $t.clientCert.keyKey }}
              path: client.key
      {{- end }}
{{- end }}

{{- define "riskstream.tlsVolumeMount" -}}
- name: kafka-tls
  mountPath: {{ include "riskstream.tlsDir" . }}
  readOnly: true
{{- end }}
