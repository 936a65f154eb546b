// Any path this app does not know.
import { Link } from "../router";
import { Page } from "../ui";

export function NotFoundPage() {
  return (
    <Page testId="notfound-page" title="Page not found">
      <p>There is nothing at this address.</p>
      <p>
        <Link href="/">Go to the home page</Link>
      </p>
    </Page>
  );
}
