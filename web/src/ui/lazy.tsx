// A component loaded on first use, in a chunk of its own, with a placeholder until it arrives:
// what only some screens need stays out of the initial bundle (docs/web.md).
import type { JSX } from "preact";
import type { Message } from "../../../protocol";
import { useEffect, useState } from "preact/hooks";

type Component<P> = (props: P) => JSX.Element | null;

export function lazy<P extends object>(load: () => Promise<Component<P>>, placeholder: Component<P>): Component<P> {
  let loaded: Component<P> | null = null;
  return function Lazy(props: P) {
    // A function given to useState is an initializer: wrap the component so it is kept, not called.
    const [Loaded, setLoaded] = useState<Component<P> | null>(() => loaded);
    useEffect(() => {
      if (Loaded) return;
      let live = true;
      void load().then((c) => {
        loaded = c;
        if (live) setLoaded(() => c);
      });
      return () => {
        live = false;
      };
    }, []);
    return Loaded ? <Loaded {...props} /> : placeholder(props);
  };
}

/** The search screen and a conversation's search panel (SearchScreen.tsx). */
export const SearchScreen = lazy(
  () => import("./SearchScreen").then((m) => m.SearchScreen),
  ({ conversationId }: { conversationId: string | null; onClose: () => void }) =>
    conversationId !== null ? <aside class="side-panel search-panel" aria-label="Search" aria-busy="true" /> : <section class="search-screen" aria-label="Search messages" aria-busy="true" />,
);

/** Picking the conversations a message is forwarded to (ForwardDialog.tsx). */
export const ForwardDialog = lazy(
  () => import("./ForwardDialog").then((m) => m.ForwardDialog),
  (_: { message: Message; onClose: () => void }) => null,
);

/** Settings' device list (Devices.tsx). */
export const Devices = lazy(
  () => import("./Devices").then((m) => m.Devices),
  () => <section class="field-group devices" aria-label="Devices" aria-busy="true" />,
);
