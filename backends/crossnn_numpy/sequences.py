"""Embeddings and recurrent layers, forward and backward (backpropagation through time), written
against the array namespace `xp` (crossnn_numpy.xp) as pure functions (see crossnn.spec.Embedding,
SimpleRNN, LSTM and GRU for the math). Emitted NumPy scripts carry these functions' source and call
them with `np`.

Sequences are (N, T, F). The input part of every step, x_t @ kernel (+ the input bias), is one
product for all steps before the loop; the loop does the recurrent part. `act` and `rec` are the
activation and recurrent activation as objects with forward(z) -> a and backward(z, a, da) -> dz.
The backward passes take d_out, the gradient of the layer's output: (N, T, units) with
return_sequences, else (N, units) for the last step.
"""

from __future__ import annotations


def embedding_forward(xp, ids, table):
    """y = table[ids] (ids: integer array of any shape)."""
    return table[ids]


def embedding_backward(xp, ids, table, dy):
    """d table: every row's gradient summed over the positions that read it."""
    return xp.scatter_add(xp.zeros_like(table), ids.reshape(-1), dy.reshape(-1, table.shape[1]))


def _steps_of(xp, d_out, steps, return_sequences):
    """The gradient reaching each step's hidden state from the layer's output."""
    if return_sequences:
        return [d_out[:, t] for t in range(steps)]
    zero = xp.zeros_like(d_out)
    return [zero] * (steps - 1) + [d_out]


def _sequence(xp, hs, return_sequences):
    return xp.stack(hs, 1) if return_sequences else hs[-1]


def rnn_forward(xp, x, kernel, recurrent, bias, act, return_sequences):
    """h_t = act(x_t @ kernel + h_{t-1} @ recurrent + bias), h_0 = 0; returns (output, cache)."""
    n, steps, features = x.shape
    xw = xp.matmul(x.reshape(n * steps, features), kernel).reshape(n, steps, -1) + bias
    h = xp.zeros_like(xw[:, 0])
    hs, zs = [], []
    for t in range(steps):
        z = xw[:, t] + xp.matmul(h, recurrent)
        h = act.forward(z)
        zs.append(z)
        hs.append(h)
    return _sequence(xp, hs, return_sequences), (x, zs, hs)


def rnn_backward(xp, d_out, cache, kernel, recurrent, act, return_sequences, need_dx=True):
    """(dx, dkernel, drecurrent, dbias) by backpropagation through time."""
    x, zs, hs = cache
    n, steps, features = x.shape
    dh_out = _steps_of(xp, d_out, steps, return_sequences)
    dh = xp.zeros_like(hs[0])
    dzs, drec = [None] * steps, None
    for t in reversed(range(steps)):
        dz = act.backward(zs[t], hs[t], dh + dh_out[t])
        dzs[t] = dz
        if t:
            part = xp.matmul(hs[t - 1].T, dz)
            drec = part if drec is None else drec + part
        dh = xp.matmul(dz, recurrent.T)
    dz_all = xp.stack(dzs, 1).reshape(n * steps, -1)
    dkernel = xp.matmul(x.reshape(n * steps, features).T, dz_all)
    dx = xp.matmul(dz_all, kernel.T).reshape(n, steps, features) if need_dx else None
    return dx, dkernel, drec if drec is not None else xp.zeros_like(recurrent), xp.sum(dz_all, axis=0)


def lstm_forward(xp, x, kernel, recurrent, bias, act, rec, return_sequences):
    """Gates i, f, c, o: c_t = f c_{t-1} + i act(z_c), h_t = o act(c_t); returns (output, cache)."""
    n, steps, features = x.shape
    u = recurrent.shape[0]
    xw = xp.matmul(x.reshape(n * steps, features), kernel).reshape(n, steps, 4 * u) + bias
    h = c = xp.zeros_like(xw[:, 0, :u])
    hs, cells = [], []
    for t in range(steps):
        z = xw[:, t] + xp.matmul(h, recurrent)
        zi, zf, zg, zo = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
        i, f, g, o = rec.forward(zi), rec.forward(zf), act.forward(zg), rec.forward(zo)
        c_prev, c = c, f * c + i * g
        tc = act.forward(c)
        h = o * tc
        cells.append((zi, zf, zg, zo, i, f, g, o, c_prev, c, tc))
        hs.append(h)
    return _sequence(xp, hs, return_sequences), (x, cells, hs)


def lstm_backward(xp, d_out, cache, kernel, recurrent, act, rec, return_sequences, need_dx=True):
    """(dx, dkernel, drecurrent, dbias) by backpropagation through time."""
    x, cells, hs = cache
    n, steps, features = x.shape
    dh_out = _steps_of(xp, d_out, steps, return_sequences)
    dh = dc = xp.zeros_like(hs[0])
    dzs, drec = [None] * steps, None
    for t in reversed(range(steps)):
        zi, zf, zg, zo, i, f, g, o, c_prev, c, tc = cells[t]
        dh_t = dh + dh_out[t]
        dc = dc + act.backward(c, tc, dh_t * o)
        dz = xp.concat([rec.backward(zi, i, dc * g), rec.backward(zf, f, dc * c_prev), act.backward(zg, g, dc * i),
                        rec.backward(zo, o, dh_t * tc)], axis=1)
        dc = dc * f
        dzs[t] = dz
        if t:
            part = xp.matmul(hs[t - 1].T, dz)
            drec = part if drec is None else drec + part
        dh = xp.matmul(dz, recurrent.T)
    dz_all = xp.stack(dzs, 1).reshape(n * steps, -1)
    dkernel = xp.matmul(x.reshape(n * steps, features).T, dz_all)
    dx = xp.matmul(dz_all, kernel.T).reshape(n, steps, features) if need_dx else None
    return dx, dkernel, drec if drec is not None else xp.zeros_like(recurrent), xp.sum(dz_all, axis=0)


def gru_forward(xp, x, kernel, recurrent, bias, act, rec, return_sequences, reset_after):
    """Gates z, r, h: h_t = z h_{t-1} + (1 - z) h~ (see crossnn.spec.GRU for both reset_after forms);
    returns (output, cache)."""
    n, steps, features = x.shape
    u = recurrent.shape[0]
    x_bias, h_bias = (bias[0], bias[1]) if reset_after else (bias, None)
    xw = xp.matmul(x.reshape(n * steps, features), kernel).reshape(n, steps, 3 * u) + x_bias
    h = xp.zeros_like(xw[:, 0, :u])
    hs, cells = [], []
    for t in range(steps):
        a = xw[:, t]
        if reset_after:
            hb = xp.matmul(h, recurrent) + h_bias
            zz, zr = a[:, :u] + hb[:, :u], a[:, u:2 * u] + hb[:, u:2 * u]
        else:
            hb = xp.matmul(h, recurrent[:, :2 * u])
            zz, zr = a[:, :u] + hb[:, :u], a[:, u:2 * u] + hb[:, u:2 * u]
        z, r = rec.forward(zz), rec.forward(zr)
        if reset_after:
            zn = a[:, 2 * u:] + r * hb[:, 2 * u:]
        else:
            zn = a[:, 2 * u:] + xp.matmul(r * h, recurrent[:, 2 * u:])
        hn = act.forward(zn)
        h_prev, h = h, z * h + (1.0 - z) * hn
        cells.append((zz, zr, zn, z, r, hn, h_prev, hb))
        hs.append(h)
    return _sequence(xp, hs, return_sequences), (x, cells, hs)


def gru_backward(xp, d_out, cache, kernel, recurrent, act, rec, return_sequences, reset_after, need_dx=True):
    """(dx, dkernel, drecurrent, dbias) by backpropagation through time; dbias is (2, 3u) with
    reset_after (input row, recurrent row), else (3u,)."""
    x, cells, hs = cache
    n, steps, features = x.shape
    u = recurrent.shape[0]
    dh_out = _steps_of(xp, d_out, steps, return_sequences)
    dh = xp.zeros_like(hs[0])
    das, drec, dh_bias = [None] * steps, None, None
    for t in reversed(range(steps)):
        zz, zr, zn, z, r, hn, h_prev, hb = cells[t]
        dh_t = dh + dh_out[t]
        dzn = act.backward(zn, hn, dh_t * (1.0 - z))
        dzz = rec.backward(zz, z, dh_t * (h_prev - hn))
        if reset_after:
            dzr = rec.backward(zr, r, dzn * hb[:, 2 * u:])
            dhb = xp.concat([dzz, dzr, dzn * r], axis=1)
            part = xp.matmul(h_prev.T, dhb)
            dh = dh_t * z + xp.matmul(dhb, recurrent.T)
            sums = xp.sum(dhb, axis=0)
            dh_bias = sums if dh_bias is None else dh_bias + sums
        else:
            d_rh = xp.matmul(dzn, recurrent[:, 2 * u:].T)
            dzr = rec.backward(zr, r, d_rh * h_prev)
            dzr_z = xp.concat([dzz, dzr], axis=1)
            part = xp.concat([xp.matmul(h_prev.T, dzr_z), xp.matmul((r * h_prev).T, dzn)], axis=1)
            dh = dh_t * z + d_rh * r + xp.matmul(dzr_z, recurrent[:, :2 * u].T)
        das[t] = xp.concat([dzz, dzr, dzn], axis=1)
        drec = part if drec is None else drec + part
    da_all = xp.stack(das, 1).reshape(n * steps, -1)
    dkernel = xp.matmul(x.reshape(n * steps, features).T, da_all)
    dx = xp.matmul(da_all, kernel.T).reshape(n, steps, features) if need_dx else None
    dx_bias = xp.sum(da_all, axis=0)
    dbias = xp.stack([dx_bias, dh_bias], 0) if reset_after else dx_bias
    return dx, dkernel, drec, dbias
