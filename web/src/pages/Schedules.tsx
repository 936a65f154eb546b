// The tool's scheduled jobs: next run in local time and UTC, and their run history.
import { Page } from "../ui";

export function SchedulesPage() {
  return (
    <Page testId="schedules-page" title="Schedules">
      <p class="muted">Not built yet.</p>
    </Page>
  );
}
