import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { AppStore } from "../app/appStore";
import type { MediaCache } from "../lib/mediaFiles";

export interface Services {
  store: AppStore;
  media: MediaCache;
}

export const ServicesContext = createContext<Services | null>(null);

export function useServices(): Services {
  const s = useContext(ServicesContext);
  if (!s) throw new Error("ServicesContext missing");
  return s;
}
