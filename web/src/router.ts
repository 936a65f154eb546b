// Client-side routing on the History API. The paths are real: the edge serves index.html for
// any path without an extension, so a reload lands on the same page.
import { createElement, type AnchorHTMLAttributes, type ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";

export interface Location {
  path: string;
  /** Changes on every navigation, even to the same path (so "/" can re-check the session). */
  key: number;
}

let key = 0;
const listeners = new Set<() => void>();

function notify(): void {
  key += 1;
  for (const listener of listeners) listener();
}

window.addEventListener("popstate", notify);
// A new fragment alone (pasting the whole setup link over "/setup") is a navigation too.
window.addEventListener("hashchange", notify);

function current(): Location {
  return { path: window.location.pathname, key };
}

/** Goes to a path of this app without reloading. `replace` drops the current entry. */
export function navigate(path: string, options: { replace?: boolean } = {}): void {
  if (options.replace) window.history.replaceState(null, "", path);
  else window.history.pushState(null, "", path);
  notify();
}

/** The current location; the component re-renders on every navigation. */
export function useLocation(): Location {
  const [location, setLocation] = useState(current);
  useEffect(() => {
    const update = () => setLocation(current());
    listeners.add(update);
    update();
    return () => {
      listeners.delete(update);
    };
  }, []);
  return location;
}

type AnchorProps = AnchorHTMLAttributes<HTMLAnchorElement>;

/** A link inside the app: a real <a href>, followed without a reload on a plain click. */
export function Link(props: AnchorProps & { href: string; children?: ComponentChildren }) {
  const onClick = (event: MouseEvent) => {
    const plain = event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey && !event.altKey;
    if (!plain || event.defaultPrevented) return;
    event.preventDefault();
    navigate(props.href);
  };
  return createElement("a", { ...props, onClick });
}
