{{/*
Names, labels and the operator's RBAC rules, shared by every template.
*/}}

{{/* The chart name, overridable with nameOverride. */}}
{{- define "gastown.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name (release name plus chart name unless the release name already
contains it), cut at 63 characters because some Kubernetes name fields are limited to that.
*/}}
{{- define "gastown.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "gastown.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "gastown.labels" -}}
helm.sh/chart: {{ include "gastown.chart" . }}
{{ include "gastown.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gastown
{{- end }}

{{/* Labels that select the operator's Pod (immutable once installed). */}}
{{- define "gastown.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gastown.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/* The operator's ServiceAccount name. */}}
{{- define "gastown.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "gastown.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "gastown.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The leader Lease's name: the release's full name unless set, so releases never share one. */}}
{{- define "gastown.leaseName" -}}
{{- default (include "gastown.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Refuse values that would run two reconcilers at once or a fence that cannot hold. Included by
the Deployment; renders nothing when the values are consistent.
*/}}
{{- define "gastown.validate" -}}
{{- $le := .Values.leaderElection }}
{{- if and (gt (int .Values.replicaCount) 1) (not $le.enabled) }}
{{- fail (printf "replicaCount=%v needs leaderElection.enabled=true: without a leader Lease every replica would reconcile the same towns" .Values.replicaCount) }}
{{- end }}
{{- if $le.enabled }}
{{- /* float64 on both sides: --set gives integers, values.yaml floats, and Go templates do not compare the two. */}}
{{- if not (lt (float64 $le.renewDeadlineSeconds) (float64 $le.leaseDurationSeconds)) }}
{{- fail (printf "leaderElection.renewDeadlineSeconds (%v) must be less than leaderElection.leaseDurationSeconds (%v): the leader must stop writing before a standby may take over" $le.renewDeadlineSeconds $le.leaseDurationSeconds) }}
{{- end }}
{{- if not (lt (float64 $le.retryPeriodSeconds) (float64 $le.renewDeadlineSeconds)) }}
{{- fail (printf "leaderElection.retryPeriodSeconds (%v) must be less than leaderElection.renewDeadlineSeconds (%v): the leader must get a chance to renew before its deadline" $le.retryPeriodSeconds $le.renewDeadlineSeconds) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The operator Pod's affinity: `affinity` when set, else the podAntiAffinity preset when there is
more than one replica, else nothing. Renders the affinity object (YAML) or an empty string.
*/}}
{{- define "gastown.affinity" -}}
{{- if .Values.affinity }}
{{- toYaml .Values.affinity }}
{{- else if and (gt (int .Values.replicaCount) 1) (ne .Values.podAntiAffinity.preset "none") }}
{{- $term := dict "labelSelector" (dict "matchLabels" (include "gastown.selectorLabels" . | fromYaml)) "topologyKey" .Values.podAntiAffinity.topologyKey }}
podAntiAffinity:
{{- if eq .Values.podAntiAffinity.preset "hard" }}
  requiredDuringSchedulingIgnoredDuringExecution:
    {{- toYaml (list $term) | nindent 4 }}
{{- else }}
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        {{- toYaml $term | nindent 8 }}
{{- end }}
{{- end }}
{{- end }}

{{/*
topologySpreadConstraints as given, a constraint without a labelSelector getting the operator
Pods' selector labels (without one it would count no pod). Renders a YAML list or nothing.
*/}}
{{- define "gastown.topologySpreadConstraints" -}}
{{- $constraints := list }}
{{- range .Values.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" (include "gastown.selectorLabels" $ | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $constraint }}
{{- end }}
{{- with $constraints }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/* True (non-empty) when the operator watches every namespace. */}}
{{- define "gastown.clusterWide" -}}
{{- if not .Values.operator.watchNamespaces }}true{{ end }}
{{- end }}

{{/*
The operator's rules inside a watched namespace (a Role per namespace, or the ClusterRole when
it watches all namespaces). Every verb is one the operator's code or kopf uses; docs/helm.md
explains each rule. No wildcards anywhere (tests/unit/test_chart.py checks it).
*/}}
{{- define "gastown.namespacedRules" -}}
# Towns: kopf lists and watches them, runs one reconcile loop (daemon) per Town and keeps its
# finalizer and progress annotations on the Town (patch); the loop reads a Town once at start.
- apiGroups: ["gastown.dev"]
  resources: ["towns"]
  verbs: ["get", "list", "watch", "patch"]
# Beads: watched into the in-memory store; the reconciler creates Beads (convoy tasks, merge
# requests, rework) with deterministic names and reads one back when the create conflicts.
- apiGroups: ["gastown.dev"]
  resources: ["beads"]
  verbs: ["get", "list", "watch", "create"]
# Convoys: watched and read only (users create them); `get` is also granted to agent Roles.
- apiGroups: ["gastown.dev"]
  resources: ["convoys"]
  verbs: ["get", "list", "watch"]
# Agents: created, hooked/unhooked (spec patch) and retired (delete) by the reconciler.
- apiGroups: ["gastown.dev"]
  resources: ["agents"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Status of Towns, Beads and Convoys: written by the reconciler only (merge patch).
- apiGroups: ["gastown.dev"]
  resources: ["towns/status", "beads/status", "convoys/status"]
  verbs: ["patch"]
# Agent status: patched by the reconciler, and by agent pods (their Roles grant `patch` on
# their own town's Agents; Kubernetes lets a subject create a Role only with permissions it
# holds itself, and the alternative, `escalate`, would be far broader).
- apiGroups: ["gastown.dev"]
  resources: ["agents/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion to their Town, Convoy, Bead or Agent;
# clusters with the OwnerReferencesPermissionEnforcement admission plugin require `update` on
# the owner's finalizers subresource for that.
- apiGroups: ["gastown.dev"]
  resources: ["towns/finalizers", "beads/finalizers", "convoys/finalizers", "agents/finalizers"]
  verbs: ["update"]
# Agent pods: watched (label-selected) into the store, listed once at start-up, started and
# stopped by the reconciler. Never updated or exec'd into.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch", "create", "delete"]
# Agent pod identities (docs/helm.md, "Agent identities"): one ServiceAccount, Role and
# RoleBinding per Town (owned by it, so garbage collection removes them) where the admission
# policy gastown-agent-own-status is installed, else one set per Agent (owned by the Agent).
# The operator creates them and never reads or deletes them; it patches a town's Role to name
# the town's Agents (resourceNames), so that pods cannot read other towns' Agents.
# `get` on serviceaccounts reads only the metadata of a ServiceAccount a Town names in
# spec.agent.serviceAccountName: it must opt in to the Town (label gastown.dev/town=<town>).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "get"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["rolebindings"]
  verbs: ["create"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles"]
  verbs: ["create", "patch"]
# Events on our objects (ours and kopf's warnings); patch raises a repeated Event's count.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Secrets: `get` by name only, for a rig's pull-request provider token (the PR poller) and the
# opt-in check of every Secret a Town names (metadata only: label gastown.dev/town=<town>). No
# list or watch: the operator cannot enumerate Secrets. Agents get theirs as mounted volumes.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- if and .Values.operator.peering (not (include "gastown.clusterWide" .)) }}
# kopf peering (operator.peering): the namespaced KopfPeering object of each watched namespace.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}

{{/*
The operator's cluster-scoped rules (always in a ClusterRole): kopf's own discovery.
*/}}
{{- define "gastown.clusterRules" -}}
# kopf watches CustomResourceDefinitions to notice our CRDs being installed or upgraded while
# it runs (without it kopf only scans them at start-up and logs a warning).
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# The operator reads the one admission policy that scopes agent pods' writes (and its binding)
# at start-up, to choose between one agent identity per town and one per agent, and then every
# few seconds: while it is missing or weakened, no agent pod is started (Town Degraded).
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicies", "validatingadmissionpolicybindings"]
  resourceNames: ["gastown-agent-own-status"]
  verbs: ["get"]
{{- if not (include "gastown.clusterWide" .) }}
# Namespaced mode: kopf lists and watches Namespaces to follow the watched namespaces being
# created or deleted after start-up (names only; nothing inside them).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- else if .Values.operator.peering }}
# kopf peering (operator.peering) in cluster-wide mode: the ClusterKopfPeering object.
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
