// This user's settings of a conversation in the store: the list sorts pinned ones first in the
// order pinned, a change is stored by the server and taken from its answer, another device's
// change arrives by the user socket, a `conversation` frame (which carries none) keeps them, and a
// muted conversation raises no notification while hidden but for a message that mentions us.
import { describe, expect, it } from "vitest";
import { MUTED_ALWAYS, type ConversationSettings } from "../../protocol";
import { conversation, message, settle } from "./fakes";
import { ME, YOU, startSignedIn } from "./storeSetup";

const NONE: ConversationSettings = { mutedUntil: null, archived: false, pinnedAt: null };

const three = () => [
  conversation("c1", [ME.id, YOU.id], { lastMessageAt: 3000 }),
  conversation("c2", [ME.id, YOU.id], { lastMessageAt: 2000, settings: { ...NONE, pinnedAt: 20 } }),
  conversation("c3", [ME.id, YOU.id], { lastMessageAt: 1000, settings: { ...NONE, pinnedAt: 10 } }),
];

describe("conversation settings", () => {
  it("sorts pinned conversations first, in the order pinned, then the rest by activity", async () => {
    const s = await startSignedIn({ list: three() });
    expect(s.store.sortedConversations().map((c) => c.id)).toEqual(["c3", "c2", "c1"]);
  });

  it("takes a change from the server's answer, and another device's from the user socket", async () => {
    const s = await startSignedIn({ list: three() });
    s.browser.server.on("PUT /conversations/c1/settings", (req) => ({ json: { conversationId: "c1", settings: { ...NONE, archived: (req.body as { archived: boolean }).archived } } }));
    await s.store.changeConversationSettings("c1", { archived: true });
    expect(s.browser.server.calls("PUT /conversations/c1/settings").map((r) => r.body)).toEqual([{ archived: true }]);
    expect(s.store.state.conversations.get("c1")?.settings).toEqual({ ...NONE, archived: true });

    s.userSocket().open();
    s.userSocket().deliver({ type: "conversationSettings", conversationId: "c1", settings: { ...NONE, pinnedAt: 30 } });
    await settle();
    expect(s.store.state.conversations.get("c1")?.settings).toEqual({ ...NONE, pinnedAt: 30 });
    expect(s.store.sortedConversations().map((c) => c.id)).toEqual(["c3", "c2", "c1"]);
  });

  it("keeps the settings when a conversation frame, which carries none, changes the conversation", async () => {
    const muted = { ...NONE, mutedUntil: MUTED_ALWAYS };
    const s = await startSignedIn({ list: [conversation("c1", [ME.id, YOU.id], { settings: muted })] });
    s.userSocket().open();
    s.userSocket().deliver({ type: "conversation", conversation: conversation("c1", [ME.id, YOU.id, "them"]) });
    await settle();
    expect(s.store.state.conversations.get("c1")?.members).toHaveLength(3);
    expect(s.store.state.conversations.get("c1")?.settings).toEqual(muted);
    // Removed, and added back: a membership change is no reason to forget them either.
    s.userSocket().deliver({ type: "conversation", conversation: conversation("c1", [], { leftSeq: 3 }) });
    await settle();
    expect(s.store.state.conversations.get("c1")).toMatchObject({ leftSeq: 3, settings: muted });
    s.userSocket().deliver({ type: "conversation", conversation: conversation("c1", [ME.id, YOU.id]) });
    await settle();
    expect(s.store.state.conversations.get("c1")?.settings).toEqual(muted);
  });

  it("shows no notification for a muted conversation while hidden, but one for a message that mentions us", async () => {
    const s = await startSignedIn({
      list: [
        conversation("c1", [ME.id, YOU.id], { settings: { ...NONE, mutedUntil: MUTED_ALWAYS } }),
        conversation("c2", [ME.id, YOU.id]),
      ],
    });
    s.browser.notifications.granted = "granted";
    s.browser.fire("hidden");
    s.userSocket().open();
    s.userSocket().deliver({ type: "message", message: message("c1", 1, YOU.id, { body: "quiet" }) });
    s.userSocket().deliver({ type: "message", message: message("c2", 1, YOU.id, { body: "loud" }) });
    s.userSocket().deliver({ type: "message", message: message("c1", 2, YOU.id, { body: "hey @me", mentions: [ME.id] }) });
    await settle();
    expect(s.browser.notifications.shown.map((n) => n.options.body)).toEqual(["loud", "hey @me"]);
    // Unread still counts every message of the muted conversation.
    expect(s.store.state.conversations.get("c1")?.unread).toBe(2);
  });
});
