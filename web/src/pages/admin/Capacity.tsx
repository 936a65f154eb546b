// "/admin/capacity": how many workspaces run, sleep, start, failed or are on hold, and the
// projected peak CPU and memory over a chosen horizon against the configured capacity
// (GetCapacityReport); the idle policy in effect (GetPolicy); and the scaler's latest decisions
// with their reasons (ListDecisions, the newest 20).
import { useEffect, useState } from "preact/hooks";
import { messageOf } from "../../api";
import { SelectField } from "../../ui";
import { AdminFrame } from "./Frame";
import { aborted, AdminTable, adminApi, LoadStatus, personName, useDirectory, When } from "./common";
import {
  decisionActionLabel,
  decisionReasonLabel,
  formatBytes,
  formatDurationSeconds,
  formatMillicores,
  formatPercent,
  formatTime,
  int,
  keepAwakeLabel,
  listed,
  parseDuration,
  parseTime,
  plainCode,
} from "./format";
import type { CapacityReport, Decision, GetPolicyResponse, IdlePolicy, ListDecisionsResponse } from "./types";

const HORIZONS = [
  { seconds: 3600, label: "the next hour" },
  { seconds: 6 * 3600, label: "the next 6 hours" },
  { seconds: 24 * 3600, label: "the next 24 hours" },
  { seconds: 7 * 24 * 3600, label: "the next 7 days" },
];
const DECISION_COLUMNS = ["When", "Workspace", "Decision", "Why"];
const HORIZON_OPTIONS = HORIZONS.map((h) => ({ value: String(h.seconds), label: h.label.replace(/^the next/, "The next") }));

type Load<T> = { status: "loading" } | { status: "error"; message: string } | { status: "ready"; value: T };

export function CapacityPage({ path }: { path: string }) {
  const [horizon, setHorizon] = useState(3600);
  const [attempt, setAttempt] = useState(0);
  const [report, setReport] = useState<Load<CapacityReport>>({ status: "loading" });
  const [policy, setPolicy] = useState<Load<IdlePolicy>>({ status: "loading" });
  const [decisions, setDecisions] = useState<Load<Decision[]>>({ status: "loading" });
  const [workspaceOwners, setWorkspaceOwners] = useState<Map<string, string>>(new Map());
  const directory = useDirectory();

  useEffect(() => {
    const controller = new AbortController();
    setReport({ status: "loading" });
    adminApi<CapacityReport>("scaler", "GetCapacityReport", { horizon: `${horizon}s` }, controller.signal)
      .then((value) => setReport({ status: "ready", value }))
      .catch((error: unknown) => {
        if (!aborted(error)) setReport({ status: "error", message: messageOf(error) });
      });
    return () => controller.abort();
  }, [horizon, attempt]);

  useEffect(() => {
    const controller = new AbortController();
    setPolicy({ status: "loading" });
    setDecisions({ status: "loading" });
    adminApi<GetPolicyResponse>("scaler", "GetPolicy", {}, controller.signal)
      .then((answer) => setPolicy({ status: "ready", value: answer.policy ?? {} }))
      .catch((error: unknown) => {
        if (!aborted(error)) setPolicy({ status: "error", message: messageOf(error) });
      });
    adminApi<ListDecisionsResponse>("scaler", "ListDecisions", { page: { pageSize: 20 } }, controller.signal)
      .then((answer) => setDecisions({ status: "ready", value: answer.decisions ?? [] }))
      .catch((error: unknown) => {
        if (!aborted(error)) setDecisions({ status: "error", message: messageOf(error) });
      });
    // Whose workspace each decision was about; optional.
    adminApi<{ workspaces?: { workspaceId?: string; ownerUserId?: string }[] }>(
      "provisioner",
      "ListWorkspaces",
      { page: { pageSize: 1000 } },
      controller.signal,
    )
      .then((answer) => {
        const owners = new Map<string, string>();
        for (const w of answer.workspaces ?? []) if (w.workspaceId && w.ownerUserId) owners.set(w.workspaceId, w.ownerUserId);
        setWorkspaceOwners(owners);
      })
      .catch(() => {});
    return () => controller.abort();
  }, [attempt]);

  const horizonLabel = HORIZONS.find((h) => h.seconds === horizon)?.label ?? formatDurationSeconds(horizon);

  return (
    <AdminFrame path={path} testId="admin-capacity-page" title="Capacity">
      <div class="admin-filters">
        <SelectField
          id="capacity-horizon"
          label="Plan for"
          value={String(horizon)}
          options={HORIZON_OPTIONS}
          onValue={(value) => setHorizon(Number(value))}
        />
        <div class="admin-filters__actions">
          <button type="button" class="button" onClick={() => setAttempt(attempt + 1)}>
            Refresh
          </button>
        </div>
      </div>

      <section class="admin-section" aria-labelledby="capacity-now-heading">
        <h2 id="capacity-now-heading">Workspaces now</h2>
        <LoadStatus
          load={report}
          loadingText="Loading the capacity report…"
          failureText="The capacity report could not be loaded."
          onRetry={() => setAttempt(attempt + 1)}
        />
        {report.status === "ready" && <Report report={report.value} horizonLabel={horizonLabel} />}
      </section>

      <section class="admin-section" aria-labelledby="capacity-policy-heading">
        <h2 id="capacity-policy-heading">When workspaces sleep</h2>
        <LoadStatus load={policy} loadingText="Loading the idle policy…" failureText="The idle policy could not be loaded." />
        {policy.status === "ready" && <Policy policy={policy.value} />}
      </section>

      <section class="admin-section" aria-labelledby="capacity-decisions-heading">
        <h2 id="capacity-decisions-heading">Latest decisions</h2>
        <LoadStatus
          load={decisions}
          loadingText="Loading the decisions…"
          failureText="The scaler's decisions could not be loaded."
        />
        {decisions.status === "ready" && decisions.value.length === 0 && (
          <p class="muted">No decisions yet: the scaler has not put any workspace to sleep, woken one or kept one awake.</p>
        )}
        {decisions.status === "ready" && decisions.value.length > 0 && (
          <AdminTable name="decisions" caption="The scaler's latest decisions, newest first" columns={DECISION_COLUMNS}>
            {decisions.value.map((d) => (
              <tr key={d.decisionId}>
                <td>
                  <When time={d.decideTime} />
                </td>
                <td>
                  <span class="admin-line">{personName(directory, workspaceOwners.get(d.workspaceId ?? ""))}</span>
                  <span class="admin-sub admin-mono">{d.workspaceId}</span>
                </td>
                <th scope="row">
                  {decisionActionLabel(d.action)}
                  {d.succeeded === false && (
                    <span class="admin-sub admin-warn">Failed{d.errorCode ? `: ${plainCode(d.errorCode)}` : ""}</span>
                  )}
                </th>
                <td>
                  <span class="admin-line">
                    {[
                      decisionReasonLabel(d.reason),
                      listed((d.keepAwakeReasons ?? []).map((r) => keepAwakeLabel(r).toLowerCase())),
                    ]
                      .filter(Boolean)
                      .join(": ")}
                  </span>
                  {d.detail && <span class="admin-sub">{d.detail}</span>}
                </td>
              </tr>
            ))}
          </AdminTable>
        )}
      </section>
    </AdminFrame>
  );
}

function Report({ report, horizonLabel }: { report: CapacityReport; horizonLabel: string }) {
  const counts = [
    { id: "running", label: "Running", value: report.runningCount ?? 0 },
    { id: "always-on", label: "Of which never sleep", value: report.alwaysOnCount ?? 0 },
    { id: "sleeping", label: "Asleep", value: report.sleepingCount ?? 0 },
    { id: "provisioning", label: "Starting", value: report.provisioningCount ?? 0 },
    { id: "failed", label: "Failed", value: report.failedCount ?? 0 },
    { id: "suspended", label: "On hold (owner suspended)", value: report.suspendedCount ?? 0 },
  ];
  const reportTime = parseTime(report.reportTime);
  return (
    <>
      <dl class="stats" data-testid="capacity-counts">
        {counts.map((c) => (
          <div key={c.id} class="stat" data-testid={`capacity-${c.id}`}>
            <dt>{c.label}</dt>
            <dd>{c.value}</dd>
          </div>
        ))}
      </dl>
      <h3 class="admin-subheading">Peak demand over {horizonLabel}</h3>
      <p class="muted">Running workspaces at their limits, plus those that wake for a scheduled task in that time.</p>
      <div class="demand">
        <Demand
          testId="capacity-cpu"
          label="CPU"
          projected={int(report.projectedCpuMillicores)}
          capacity={int(report.capacityCpuMillicores)}
          format={formatMillicores}
          setting="scaler.capacity_cpu_millicores"
        />
        <Demand
          testId="capacity-memory"
          label="Memory"
          projected={int(report.projectedMemoryBytes)}
          capacity={int(report.capacityMemoryBytes)}
          format={formatBytes}
          setting="scaler.capacity_memory_mib"
        />
      </div>
      {reportTime && <p class="muted">Reported at {formatTime(reportTime, true)}.</p>}
    </>
  );
}

interface DemandProps {
  testId: string;
  label: string;
  projected: number;
  capacity: number;
  format: (value: number) => string;
  setting: string;
}

function Demand({ testId, label, projected, capacity, format, setting }: DemandProps) {
  const share = capacity > 0 ? projected / capacity : undefined;
  const level = share === undefined ? "" : share >= 0.9 ? " bar--high" : share >= 0.7 ? " bar--mid" : "";
  return (
    <div class="card demand__item" data-testid={testId}>
      <h4>{label}</h4>
      <p class="demand__figure">
        {format(projected)}
        {capacity > 0 ? ` of ${format(capacity)}` : ""}
        {share !== undefined && <span class="muted"> ({formatPercent(share)})</span>}
      </p>
      {share !== undefined ? (
        <span class={`bar bar--wide${level}`} aria-hidden="true">
          <span class="bar__fill" style={{ width: `${Math.min(100, share * 100).toFixed(1)}%` }} />
        </span>
      ) : (
        <p class="muted">
          No capacity is configured, so there is nothing to compare with. Set <code>{setting}</code>.
        </p>
      )}
      {share !== undefined && share > 1 && (
        <p class="admin-warn">More than the configured capacity: some workspaces may not be able to start.</p>
      )}
    </div>
  );
}

function Policy({ policy }: { policy: IdlePolicy }) {
  const seconds = (d: string | undefined) => {
    const value = parseDuration(d);
    return value === undefined ? "—" : formatDurationSeconds(value);
  };
  const overrides = policy.userOverrides ?? [];
  return (
    <dl class="admin-facts" data-testid="capacity-policy">
      <div>
        <dt>Sleeps after</dt>
        <dd>{seconds(policy.idleTimeout)} without use</dd>
      </div>
      <div>
        <dt>Checked every</dt>
        <dd>{seconds(policy.checkInterval)}</dd>
      </div>
      <div>
        <dt>Stays awake after waking for at least</dt>
        <dd>{seconds(policy.graceAfterWake)}</dd>
      </div>
      <div>
        <dt>Wakes before a scheduled task</dt>
        <dd>{seconds(policy.wakeBeforeJob)} ahead</dd>
      </div>
      <div>
        <dt>Connected chat apps keep it awake</dt>
        <dd>{policy.keepMessagingAwake ? "Yes" : "No"}</dd>
      </div>
      <div>
        <dt>Exceptions for particular people</dt>
        <dd>
          {overrides.length === 0
            ? "None"
            : `${overrides.length} (${overrides.filter((o) => o.alwaysOn).length} always on)`}
        </dd>
      </div>
    </dl>
  );
}
