// How message text is shown: system sentences (you as actor and subject), links, emoji-only messages.
import { describe, expect, it } from "vitest";
import { emojiCount, linkify, systemSentence } from "../src/state/messageText";

const names: Record<string, string> = { ann: "Alice Adams", bob: "Bob", cy: "Cy" };
const name = (id: string) => names[id] ?? "?";
const event = (e: string, actorId: string, userIds: string[] = []) => JSON.stringify({ event: e, actorId, userIds });

describe("system sentences", () => {
  it("say you and You where the signed-in user is the subject or the actor", () => {
    expect(systemSentence(event("added", "ann", ["bob"]), "bob", name, true)).toBe("Alice Adams added you");
    expect(systemSentence(event("added", "bob", ["cy"]), "bob", name, true)).toBe("You added Cy");
    expect(systemSentence(event("added", "ann", ["cy", "bob"]), "bob", name, true)).toBe("Alice Adams added Cy and you");
    expect(systemSentence(event("added", "ann", ["bob", "cy"]), "cy", name, true)).toBe("Alice Adams added Bob and you");
    expect(systemSentence(event("added", "ann", ["bob"]), "cy", name, true)).toBe("Alice Adams added Bob");
    expect(systemSentence(event("removed", "ann", ["bob"]), "bob", name, true)).toBe("Alice Adams removed you");
    expect(systemSentence(event("removed", "bob", ["cy"]), "bob", name, true)).toBe("You removed Cy");
    expect(systemSentence(event("removed", "ann", ["cy"]), "bob", name, true)).toBe("Alice Adams removed Cy");
    expect(systemSentence(event("left", "bob"), "bob", name, true)).toBe("You left");
    expect(systemSentence(event("left", "cy"), "bob", name, true)).toBe("Cy left");
    expect(systemSentence(event("deviceLoggedOut", "bob", ["bob"]), "bob", name, true)).toBe("One of your devices logged out");
    expect(systemSentence(event("deviceLoggedOut", "cy", ["cy"]), "bob", name, true)).toBe("A device of Cy logged out");
  });

  it("say group for a group, conversation for a direct chat", () => {
    expect(systemSentence(event("created", "bob"), "bob", name, true)).toBe("You created the group");
    expect(systemSentence(event("created", "ann"), "bob", name, true)).toBe("Alice Adams created the group");
    expect(systemSentence(event("created", "ann"), "bob", name, false)).toBe("Alice Adams created the conversation");
    expect(systemSentence("not json", "bob", name, true)).toBe("Conversation updated");
  });
});

describe("links", () => {
  it("finds http and https links, without trailing punctuation", () => {
    expect(linkify("see https://example.com/a?b=1. and (http://x.y/p_(1))")).toEqual([
      "see ",
      { href: "https://example.com/a?b=1", text: "https://example.com/a?b=1" },
      ". and (",
      { href: "http://x.y/p_(1)", text: "http://x.y/p_(1)" },
      ")",
    ]);
  });

  it("leaves every other scheme and any markup as plain text", () => {
    expect(linkify("javascript:alert(1) <a href=x>y</a> data:text/html,hi ftp://x.y")).toEqual(["javascript:alert(1) <a href=x>y</a> data:text/html,hi ftp://x.y"]);
    expect(linkify('https://x.y/"onmouseover="a')).toEqual([{ href: "https://x.y/", text: "https://x.y/" }, '"onmouseover="a']);
    expect(linkify("plain")).toEqual(["plain"]);
  });
});

describe("emoji-only messages", () => {
  it("counts one to a few emoji, including skin tones, flags, sequences and keycaps", () => {
    expect(emojiCount("😀")).toBe(1);
    expect(emojiCount("👍🏽")).toBe(1);
    expect(emojiCount("🇬🇧🇫🇷")).toBe(2);
    expect(emojiCount(" 👨‍👩‍👧 ❤️ 🎉 ")).toBe(3);
    expect(emojiCount("1️⃣")).toBe(1);
    expect(emojiCount("😀😀😀😀")).toBe(4);
  });

  it("is 0 for text with anything else", () => {
    for (const s of ["hi 😀", "1", "#", "", "   ", "ok", "a😀"]) expect(emojiCount(s), s).toBe(0);
  });
});
