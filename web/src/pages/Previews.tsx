// The workspace's listening ports and their preview links.
import { Page } from "../ui";

export function PreviewsPage() {
  return (
    <Page testId="previews-page" title="Previews">
      <p class="muted">Not built yet.</p>
    </Page>
  );
}
