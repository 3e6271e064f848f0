import { describe, expect, it } from 'vitest';
import { Intake } from '../../../gateway/intake.js';

/** An intake whose turns and clock the test drives: each job costs `jobMs` of fake time. */
function harness(budgetMs: number, jobMs: number) {
  let clock = 0;
  const turns: Array<() => void> = [];
  const intake = new Intake({ budgetMs, schedule: (t) => turns.push(t), now: () => clock });
  const ran: string[] = [];
  const job = (name: string) => () => {
    ran.push(name);
    clock += jobMs;
  };
  const runTurn = () => {
    const t = turns.shift();
    if (!t) throw new Error('no turn scheduled');
    const before = ran.length;
    t();
    return ran.slice(before);
  };
  return { intake, job, runTurn, turns, ran };
}

describe('fair intake', () => {
  it('serves a client with one request in the first round, whatever another client queued before it', () => {
    const h = harness(100, 1);
    for (let i = 0; i < 50; i++) h.intake.push('attacker', h.job(`a${i}`));
    h.intake.push('probe', h.job('probe'));
    expect(h.runTurn().slice(0, 3)).toEqual(['a0', 'probe', 'a1']);
  });

  it('stops a turn when its budget is spent and schedules the next, in round-robin order', () => {
    const h = harness(3, 1);
    for (let i = 0; i < 4; i++) h.intake.push('a', h.job(`a${i}`));
    for (let i = 0; i < 4; i++) h.intake.push('b', h.job(`b${i}`));
    expect(h.runTurn()).toEqual(['a0', 'b0', 'a1']);
    expect(h.intake.size).toBe(5);
    expect(h.turns).toHaveLength(1);
    expect(h.runTurn()).toEqual(['b1', 'a2', 'b2']);
    expect(h.runTurn()).toEqual(['a3', 'b3']);
    expect(h.turns).toHaveLength(0);
    expect(h.intake.size).toBe(0);
  });

  it('schedules one turn for a burst and a new one only once work arrives again', () => {
    const h = harness(100, 0);
    h.intake.push('a', h.job('a'));
    h.intake.push('b', h.job('b'));
    expect(h.turns).toHaveLength(1);
    expect(h.runTurn()).toEqual(['a', 'b']);
    h.intake.push('c', h.job('c'));
    expect(h.turns).toHaveLength(1);
  });

  it('keeps running the other jobs when one throws', () => {
    const errors: unknown[] = [];
    const turns: Array<() => void> = [];
    const intake = new Intake({ schedule: (t) => turns.push(t), onError: (e) => errors.push(e) });
    const ran: string[] = [];
    intake.push('a', () => {
      throw new Error('boom');
    });
    intake.push('b', () => ran.push('b'));
    turns.shift()?.();
    expect(ran).toEqual(['b']);
    expect(errors).toHaveLength(1);
  });
});
