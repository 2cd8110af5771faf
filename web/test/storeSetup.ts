// A signed-in AppStore on a fake browser, with the server routes every start calls.
import type { Conversation, ConversationClientFrame, Message, UserClientFrame } from "../../protocol";
import { AppStore } from "../src/app/appStore";
import { conversation, fakeBrowser, settle, user, type FakeBrowser, type FakeSocket } from "./fakes";

export const ME = user("me", "Me");
export const YOU = user("you", "You There");

export interface Setup {
  browser: FakeBrowser;
  store: AppStore;
  /** The conversations GET /conversations answers with. */
  list: Conversation[];
  /** Messages the server holds per conversation, for history, sends and ?since= pages. */
  stored: Map<string, Message[]>;
  userSocket(): FakeSocket<UserClientFrame>;
  chatSocket(id: string): FakeSocket<ConversationClientFrame>;
}

export function signIn(browser: FakeBrowser, me = ME): void {
  browser.storage.setItem("edge-chat:session", JSON.stringify({ token: `t-${me.id}`, user: me, deviceId: `${me.id}-d` }));
}

/** The routes a start calls, answering from `list` and `stored`; a test adds or overrides any. */
export function routes(browser: FakeBrowser, list: Conversation[], stored: Map<string, Message[]>): void {
  const users = new Map([ME, YOU].map((u) => [u.id, u]));
  browser.server
    .on("POST /auth/ticket", () => ({ json: { ticket: "tk", expiresAt: browser.clock.now() + 30_000 } }))
    .on("GET /conversations", () => ({ json: { conversations: list } }))
    .on("GET /users", (req) => ({ json: { users: (req.query.get("ids") ?? "").split(",").flatMap((id) => users.get(id) ?? []) } }))
    .on("GET /messages", () => ({ json: { messages: [], cursor: "c0", hasMore: false } }));
  for (const conv of list) {
    browser.server
      .on(`GET /conversations/${conv.id}`, () => ({ json: { conversation: conv } }))
      .on(`GET /conversations/${conv.id}/messages`, () => ({ json: { messages: stored.get(conv.id) ?? [], hasMore: false } }))
      .on(`GET /conversations/${conv.id}/receipts`, () => ({ json: { receipts: [] } }))
      .on(`POST /conversations/${conv.id}/receipts`, (req) => ({ json: { receipt: { userId: ME.id, deliveredSeq: 0, readSeq: 0, updatedAt: 1, ...(req.body as object) } } }));
  }
}

export async function startSignedIn(options: { path?: string; list?: Conversation[]; browser?: FakeBrowser; stored?: Map<string, Message[]> } = {}): Promise<Setup> {
  const browser = options.browser ?? fakeBrowser(options.path ?? "/");
  const list = options.list ?? [conversation("c1", [ME.id, YOU.id])];
  const stored = options.stored ?? new Map<string, Message[]>();
  if (!options.browser) {
    signIn(browser);
    routes(browser, list, stored);
  }
  let ids = 0;
  const store = new AppStore(browser, { newId: () => `cm${++ids}` });
  await store.start();
  await settle();
  return {
    browser,
    store,
    list,
    stored,
    userSocket: () => browser.sockets.latest<UserClientFrame>("/ws"),
    chatSocket: (id) => browser.sockets.latest<ConversationClientFrame>(`/conversations/${id}/ws`),
  };
}
